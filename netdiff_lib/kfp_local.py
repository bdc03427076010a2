"""Run a netdiff pipeline on this machine with ``kfp.local`` (``SubprocessRunner``, this Python environment).

The pipeline is the one compiled for clusters (:mod:`netdiff_lib.kfp_pipelines`); kfp.local ignores its
Kubernetes settings, so object-store credentials come from this process's environment and every task runs
as a subprocess of the current interpreter (``PYTHONPATH`` gets the folder of this netdiff_lib, so the tasks
run the same code, a checkout's or an installed one's).  kfp.local's verbose output goes to
``<work>/run.log``; the console gets one line per finished task and, every :data:`TICK_S` seconds, one per
task still running with its latest progress bar (``validate synthetic 12/25``).  A failed task becomes a
:class:`NetdiffError` carrying the task's last error line.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import itertools
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import netdiff_lib
from netdiff_lib.errors import NetdiffError
from netdiff_lib.kfp_pipelines import load_pipeline

#: The folder holding the netdiff_lib that runs this (a checkout or site-packages): task subprocesses import
#: the same code from it.
PACKAGE_ROOT = Path(netdiff_lib.__file__).resolve().parents[1]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_ERROR = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")
_LOCAL_NOOP = r"Task '.*': settings .* have no effect in the current local runner"
_IMAGE_NOTE = r"You may be attemping to run a task that uses custom or non-Python base image"
_KFP_NOISE = re.compile(r"^\s*(?:[\w.]+\.)?RuntimeError: Pipeline '|Inner task failed")
_TQDM = re.compile(r"^\s*([^|]+?):\s+\d+%\|.*\|\s*(\d+)/(\d+)")  # "validate x:  48%|####  | 12/25 [..]"
TICK_S = 15.0  # seconds between "still running" lines of a long task


class _Console(io.TextIOBase):
    """A stream for kfp.local's output: everything to the log file, one line per finished task to the console."""

    def __init__(self, log: TextIO, console: TextIO | None) -> None:
        self.log, self.console = log, console
        self.started: dict[str, float] = {}
        self.failed: list[str] = []
        self.running: dict[int, tuple[str, float]] = {}  # (task, start) per running task (ParallelFor: several)
        self.progress: dict[int, tuple[str, float]] = {}  # a running task's latest progress bar ("desc n/total")
        self._task_of: dict[int, int] = {}  # thread -> the running task it last started
        self._count = itertools.count()
        self._partial: dict[int, str] = {}  # per thread: tasks of a ParallelFor write at the same time
        self._lock = threading.Lock()  # tasks of a ParallelFor write from several threads

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self.log.write(text)
            thread = threading.get_ident()
            lines = (self._partial.get(thread, "") + text).split("\n")
            self._partial[thread] = lines.pop()
            for line in lines:
                self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def _line(self, line: str) -> None:
        thread = threading.get_ident()
        if m := _START.search(line):
            self.started[m.group(1)] = time.monotonic()
            self._task_of[thread] = key = next(self._count)
            self.running[key] = (m.group(1), time.monotonic())
        elif (m := _TQDM.match(line)) and self._task_of.get(thread) in self.running:
            self.progress[self._task_of[thread]] = (f"{m.group(1)} {m.group(2)}/{m.group(3)}", time.monotonic())
        elif m := _END.search(line):
            name, status = m.groups()
            # every running copy of it: kfp.local does not always log the end of each ParallelFor iteration
            for done in [k for k, (n, _) in self.running.items() if n == name]:
                self.running.pop(done)
                self.progress.pop(done, None)
            now = time.monotonic()
            took = now - self.started.get(name, now)
            if status != "SUCCESS":
                self.failed.append(name)
            if self.console is not None and not name.startswith("for-loop"):
                self.console.write(f"  {name:<24} {status.lower():<8} {took:6.1f} s\n")
                self.console.flush()


    def _fresh(self, key: int, now: float) -> str:
        """The task's progress bar if it moved since the last tick (a finished bar says nothing of what follows)."""
        text, when = self.progress.get(key, ("", 0.0))
        return text if now - when <= TICK_S else ""

    def tick(self) -> None:
        """One line per task running for at least :data:`TICK_S` seconds, with its latest progress."""
        with self._lock:
            now = time.monotonic()
            for key, (name, start) in list(self.running.items()):
                if self.console is not None and now - start >= TICK_S and not name.startswith("for-loop"):
                    self.console.write(f"  {name:<24} {'running':<8} {now - start:6.0f} s  "
                                       f"{self._fresh(key, now)}".rstrip() + "\n")
                    self.console.flush()


@contextlib.contextmanager
def _ticking(stream: _Console) -> Iterator[None]:
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(TICK_S):
            stream.tick()

    ticker = threading.Thread(target=loop, name="netdiff-progress", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()


def last_error(log_path: Path) -> str | None:
    """The cause of a failed task: the last netdiff error line of the log (``StorageError: ...``), else the
    last ``SomeError: message`` line that is not kfp's own report."""
    from netdiff_lib import errors, storage

    ours = {c.__name__ for c in (*vars(errors).values(), storage.StorageError)
            if isinstance(c, type) and issubclass(c, errors.NetdiffError)}
    found: dict[bool, str] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        line = _ANSI.sub("", line)
        if (m := _ERROR.match(line)) and not _KFP_NOISE.search(line):
            found[m.group(1) in ours] = f"{m.group(1)}: {m.group(2).strip()}"
    return found.get(True) or found.get(False)


@contextlib.contextmanager
def _subprocess_env() -> Iterator[None]:
    """Let task subprocesses import the same netdiff_lib, components and pipelines as this process."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), old) if p)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def run_local(arguments: dict[str, Any], work_dir: str | Path, *, pipeline: str = "netdiff", cache: bool = False,
              retries: int = 0, console: TextIO | str | None = "stderr") -> Path:
    """Run ``pipeline`` with ``arguments``; task artifacts under ``work_dir``; returns the log file's path.

    One line per finished task goes to ``console`` (default ``sys.stderr``; ``None``: nothing)."""
    from kfp import local

    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "run.log"
    func = load_pipeline(pipeline, gpu_retries=retries)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "artifacts"),
               raise_on_error=True, enable_caching=cache, cache_root=str(work / "cache"))
    with open(log_path, "w", encoding="utf-8") as log, _subprocess_env():
        stream, print_ = _Console(log, sys.stderr if console == "stderr" else console), builtins.print
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream), warnings.catch_warnings(), \
                    _ticking(stream):
                warnings.filterwarnings("ignore", _LOCAL_NOOP, UserWarning)  # resources: cluster-only, expected
                warnings.filterwarnings("ignore", _IMAGE_NOTE, RuntimeWarning)  # the images hold this env
                func(**arguments)
        except RuntimeError as exc:
            log.flush()
            cause = last_error(log_path) or _ANSI.sub("", str(exc))
            where = f" in task {stream.failed[-1]!r}" if stream.failed else ""
            raise NetdiffError(f"the pipeline failed{where}: {cause} (full log: {log_path})") from None
        finally:  # kfp.local's print and log handlers can stay behind when its tasks run in parallel
            builtins.print = print_
            root.handlers[:], root.level = handlers, level
    return log_path
