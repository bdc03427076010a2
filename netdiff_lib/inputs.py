"""Load any trace-shaped input by its suffix: array file, nPrint CSV, NetDiffusion PNG or a capture.

Command-line stages take files or folders; :func:`expand` turns them into a sorted file list and
:func:`load_trace_any` into a :class:`Trace`, so no stage re-implements input handling.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from netdiff_lib.dataset import CAPTURE_SUFFIXES, label_from_name
from netdiff_lib.errors import InputError, os_cause
from netdiff_lib.schema import NETDIFFUSION, Layout
from netdiff_lib.trace import ArrayFile, Trace, load_trace

ARRAY_SUFFIXES = (".npz",)
CSV_SUFFIXES = (".nprint", ".csv")
IMAGE_SUFFIXES = (".png",)
MATRIX_SUFFIXES = ARRAY_SUFFIXES + CSV_SUFFIXES + IMAGE_SUFFIXES


def expand(paths: Iterable[str | Path], suffixes: tuple[str, ...]) -> list[Path]:
    """Files as given, and for each folder every file below it with one of ``suffixes`` (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        try:
            is_dir = stat.S_ISDIR(os.stat(p).st_mode)
        except OSError as exc:  # missing, a broken link, a symlink loop, no permission
            if exc.errno != errno.ENOENT:
                raise InputError(p, os_cause(exc, "cannot read")) from None
            raise InputError(p, "broken link (its target does not exist)" if p.is_symlink()
                             else "no such file or folder") from None
        if is_dir:
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                raise InputError(p, f"no input files ({', '.join(suffixes)}) in this folder")
            out.extend(found)
        else:
            out.append(p)
    return out


def output_names(files: list[Path]) -> dict[Path, str]:
    """A name for each file's outputs, unique among ``files``: its stem, or where two files share a stem (the
    same capture name in two label folders) the stem after as many of its folders as tell them apart
    (``a/x.pcap``, ``b/x.pcap`` -> ``a/x``, ``b/x``); a file given twice gets ``-2``, ``-3``..."""
    names: dict[Path, str] = {}
    depth = 1
    todo = list(dict.fromkeys(files))
    while todo:
        cut = {f: "/".join((*f.parent.parts[len(f.parent.parts) - depth + 1:], f.stem)) if depth > 1 else f.stem
               for f in todo}
        seen = Counter(cut.values()) + Counter(names.values())
        names.update({f: n for f, n in cut.items() if seen[n] == 1})
        todo = [f for f in todo if f not in names]
        if todo and all(depth > len(f.parent.parts) for f in todo):  # the same path under two spellings
            for i, f in enumerate(todo):
                names[f] = f"{cut[f]}-{i + 2}"
            break
        depth += 1
    return names


def label_of(path: Path) -> str:
    """NetDiffusion's convention: the file-name prefix before a trailing ``_<n>`` (``netflix_01`` -> ``netflix``)."""
    return label_from_name(path.name, CAPTURE_SUFFIXES + MATRIX_SUFFIXES)


def load_trace_any(
    path: str | Path, layout: Layout | None = NETDIFFUSION, *, max_packets: int | None = None, snap: str = "nearest",
    capture_mode: str = "netdiff", max_rows: int | None = None,
) -> Trace:
    """Read a trace from an array file, nPrint CSV, NetDiffusion PNG or capture.

    The trace is converted to ``layout``; ``None`` keeps the file's own layout (captures: the full
    NetDiffusion layout, addresses included).  Captures are read in ``capture_mode`` (``CAPTURE_MODES``); one
    that gives no packet is refused as ``encode`` refuses it.  A path without a suffix (``/dev/stdin``, a pipe,
    a FIFO) is read as a capture, once.  Only the first ``max_packets`` rows are read; an array file of more
    than ``max_rows`` rows is refused before it is read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in ARRAY_SUFFIXES:
        trace = load_trace(path, max_rows, limit=max_packets)
    elif suffix in CSV_SUFFIXES:
        from netdiff_lib.nprint.csvio import read_nprint_csv

        trace = read_nprint_csv(path)
    elif suffix in IMAGE_SUFFIXES:
        from netdiff_lib.image import load_image

        trace = Trace(load_image(path, snap), NETDIFFUSION, None, None, str(path))
    elif suffix in CAPTURE_SUFFIXES or not suffix:  # no suffix: /dev/stdin, <(...) or a FIFO; the magic decides
        from netdiff_lib.nprint.encode import CAPTURE_MODES, encode_pcap

        mode, count_read = CAPTURE_MODES[capture_mode]
        return encode_pcap(path, layout or NETDIFFUSION.full, max_packets=max_packets, label=label_of(path),
                           mode=mode, count_read=count_read).require_packets(path)
    else:
        raise InputError(path, f"unknown input type {suffix!r} (expected capture, .npz, .nprint/.csv or .png)")
    if trace.label is None:
        trace.label = label_of(path)
    if layout is not None and trace.layout != layout:
        try:
            trace = trace.with_layout(layout)
        except ValueError as exc:
            raise InputError(path, str(exc)) from None
    if max_packets is not None:
        trace = Trace(trace.matrix[:max_packets], trace.layout,
                      None if trace.ts_ns is None else trace.ts_ns[:max_packets], trace.label, trace.source)
    return trace


def trace_chunks(path: str | Path, snap: str = "nearest") -> Iterator[Trace]:
    """A matrix input in its own layout as traces of consecutive rows: an array file streamed
    (``trace.CHUNK_ROWS`` rows at a time, so memory stays bounded however many rows it holds), other inputs
    whole."""
    if Path(path).suffix.lower() not in ARRAY_SUFFIXES:
        yield load_trace_any(path, None, snap=snap)
        return
    with ArrayFile(path) as f:
        for start, rows in f.chunks():
            ts = None if f.ts_ns is None else f.ts_ns[start:start + len(rows)]
            yield Trace(rows, f.layout, ts, f.label, f.source, None, f.meta)
