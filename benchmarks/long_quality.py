"""The generator on traces cut from long captures beside the per-file figures, on the same captures.

    python -m benchmarks.long_quality --split SPLIT --work DIR [--arms "file flow window:60"] [--config base]
                                      [--budget 60] [--per-class 10] [--eval-per-class 40] [--json FILE]

SPLIT is a ``netdiff split DATA -o SPLIT --test-fraction 0.2 --seed 0 --mode link`` folder (``--data DATA`` makes
it). Each class's train captures are laid one after another as one long capture (:func:`benchmarks.replay.concat`,
the tests' merge: file order, each capture ``--gap`` seconds after the previous one), the test captures likewise.
Arms, each trained with the same preset, budget and seed (privacy gate off: one long capture per class leaves no
captures to hold out), then ``netdiff generate --per-class`` and ``netdiff evaluate``:

* ``file``: per-file traces, as NetDiffusion and ``benchmarks/gpu_native.sh``: train on SPLIT/train, evaluated
  against SPLIT/test (real-train SPLIT/train);
* ``flow``, ``window:S``: ``netdiff train --traces flow|window:S`` on the long train captures, evaluated against
  the real test traces cut the same way (:mod:`benchmarks.trace_pcaps`: netdiff's own cutting, at most
  ``--eval-per-class`` traces per class and set, seeded; real-train likewise from the long train captures).

Evaluations run in the background while the next arm trains. Prints one table, the arms side by side (synthetic
value, the real-train floor and their ratio), and writes everything to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.long_run import NETDIFF, PY
from benchmarks.replay import NS, concat

T0 = time.monotonic()
ROWS = (  # (name, summary key, "ratio" to the floor, or None)
    ("field JSD, macro", "fidelity_jsd_macro", True),
    ("packet RF macro-F1: TSTR / TRTR", "rf_macro_f1", True),
    ("flow variables JSD, macro", "flow_jsd_macro", True),
    ("flow RF macro-F1: TSTR / TRTR", "flow_rf_macro_f1", True),
    ("one-packet flows", "flow_one_packet_share", False),
    ("TCP handshake share", "flow_handshake_share", False),
    ("flows per trace", "flows_per_trace", False),
    ("DCR median, ratio to real-test's", "dcr_median_ratio", False),
    ("near copies", "near_copy_rate", False),
    ("packets failing validation", "failed_rate", False),
)


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:.0f}s] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], logfile: Path) -> subprocess.CompletedProcess:
    log(" ".join(cmd))
    with open(logfile, "ab") as fh:
        return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)


def classes(split: Path, limit: int | None) -> list[str]:
    names = sorted(p.name for p in (split / "train").iterdir() if p.is_dir() and (split / "test" / p.name).is_dir())
    return names[:limit] if limit else names


def long_captures(split: Path, work: Path, labels: list[str], gap_s: float) -> dict[str, Any]:
    """WORK/long/{train,test}/<label>/long.pcap, and WORK/file/{train,test}/<label>/ links to the split's files."""
    out: dict[str, Any] = {}
    start = 1_499_000_000 * NS
    for part in ("train", "test"):
        for lab in labels:
            files = sorted((split / part / lab).glob("*.pcap*"))
            dest = work / "long" / part / lab / "long.pcap"
            dest.parent.mkdir(parents=True, exist_ok=True)
            out[f"{part}/{lab}"] = concat(dest, files, start, int(gap_s * NS))
            for f in files:  # file links: netdiff lists no linked folders
                link = work / "file" / part / lab / f.name
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(f.resolve())
    return out


def cut_real(work: Path, mode: str, per_class: int, logfile: Path) -> list[subprocess.Popen]:
    """Background jobs writing WORK/real_<arm>/{train,test}/<label>/*.pcap from the long captures."""
    jobs = []
    for part in ("train", "test"):
        cmd = [*PY, "-m", "benchmarks.trace_pcaps", str(work / "long" / part), "--out",
               str(work / f"real_{tag(mode)}" / part), "--traces", mode, "--per-class", str(per_class)]
        log(" ".join(cmd))
        fh = open(logfile, "ab")  # noqa: SIM115 - the job's, for its life
        jobs.append(subprocess.Popen(cmd, stdout=fh, stderr=fh))  # counts, unmatched traces included, to the log
    return jobs


def tag(arm: str) -> str:
    return arm.replace(":", "")


def train(args: argparse.Namespace, arm: str, work: Path, logfile: Path) -> Path | None:
    model = work / f"model_{tag(arm)}"
    data = work / ("file" if arm == "file" else "long") / "train"
    cmd = [*NETDIFF, "train", "--data", str(data), "-o", str(model), "--config", args.config, "--time-budget",
           str(args.budget), "--privacy", "off", "--seed", str(args.seed), "-q"]
    cmd += [] if arm == "file" else ["--traces", arm]
    cmd += ["--steps", str(args.steps)] if args.steps else []
    t0 = time.monotonic()
    rc = run(cmd, logfile).returncode
    log(f"arm {arm}: trained in {time.monotonic() - t0:.0f}s (rc {rc})")
    return model if rc == 0 else None


def evaluate(args: argparse.Namespace, arm: str, model: Path, work: Path, logfile: Path) -> subprocess.Popen:
    syn = work / f"synthetic_{tag(arm)}"
    run([*NETDIFF, "generate", "--model", str(model), "--per-class", str(args.per_class), "-o", str(syn), "-q",
         "--seed", str(args.seed), "--compile", args.compile], logfile)
    real = work / ("file" if arm == "file" else f"real_{tag(arm)}")
    cmd = [*NETDIFF, "evaluate", "--real-train", str(real / "train"), "--real-test", str(real / "test"),
           "--synthetic", str(syn), "-o", str(work / f"report_{tag(arm)}"), "-q", "--no-plots", "--seed",
           str(args.seed)]
    log(" ".join(cmd))
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(logfile, "ab"))


def _cell(row: tuple[str, str, bool], rep: dict[str, Any]) -> str:
    _, key, ratio = row
    syn, ref = rep["summary"].get("synthetic", {}).get(key), rep["summary"].get("reference", {}).get(key)
    if syn is None:
        return "-"
    if not ratio:
        return f"{syn:.3g} (real {ref:.3g})" if isinstance(ref, float | int) else f"{syn:.3g}"
    x = f" = {syn / ref:.2f}x" if isinstance(ref, float | int) and ref else ""
    return f"{syn:.3f} / {ref:.3f}{x}"


def table(reports: dict[str, dict[str, Any]]) -> str:
    arms = list(reports)
    lines = ["| metric (synthetic / real-train floor) | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    sizes = ["real-train / real-test / synthetic traces"] + [
        " / ".join(str(r["inputs"][n]["traces"]) for n in ("real_train", "real_test", "synthetic"))
        for r in reports.values()]
    lines.append("| " + " | ".join(sizes) + " |")
    for row in ROWS:
        lines.append(f"| {row[0]} | " + " | ".join(_cell(row, r) for r in reports.values()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--split", help="a netdiff split folder (train/<label>, test/<label>)")
    p.add_argument("--data", help="or: labelled captures to split here (80/20 by file, seed 0)")
    p.add_argument("--work", required=True)
    p.add_argument("--arms", default="file flow window:60", help="space-separated: file, flow, window:SECONDS")
    p.add_argument("--config", default="base")
    p.add_argument("--budget", type=float, default=60.0, help="training seconds per arm")
    p.add_argument("--steps", type=int, help="training steps per arm (default: the preset's, within --budget)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-class", type=int, default=10, help="generated traces per class and arm")
    p.add_argument("--compile", default="off", help="generate --compile (off: no compile time in a short run)")
    p.add_argument("--eval-per-class", type=int, default=40, help="real long-capture traces per class and set")
    p.add_argument("--gap", type=float, default=1.0, help="seconds between the captures laid end to end")
    p.add_argument("--classes", type=int, help="only the first N classes (a quick run)")
    p.add_argument("--deadline", type=float, help="seconds from the start: skip arms and stop evaluations to end "
                                                    "before it")
    p.add_argument("--json", help="write the result here (default WORK/long_quality.json)")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    logfile = work / "long_quality.log"
    split = Path(args.split or work / "split")
    if args.data:
        run([*NETDIFF, "split", args.data, "-o", str(split), "--test-fraction", "0.2", "--seed", "0", "--mode",
             "link", "-q"], logfile)
    labels = classes(split, args.classes)
    arms = args.arms.split()
    result: dict[str, Any] = {"args": vars(args), "classes": labels, "long": long_captures(split, work, labels,
                                                                                           args.gap)}
    log(f"{len(labels)} classes, long captures written; arms {arms}")
    cuts = [j for arm in arms if arm != "file" for j in cut_real(work, arm, args.eval_per_class, logfile)]
    evals: dict[str, subprocess.Popen] = {}
    for arm in arms:
        if args.deadline and args.deadline - (time.monotonic() - T0) < args.budget + 120:
            log(f"arm {arm}: skipped, too little time left before the {args.deadline:.0f}s deadline")
            continue
        model = train(args, arm, work, logfile)
        if model is not None:
            if arm != "file":
                for j in cuts:
                    j.wait()
            evals[arm] = evaluate(args, arm, model, work, logfile)
    reports = {}
    for arm, job in evals.items():
        try:
            job.wait(None if not args.deadline else max(1.0, args.deadline - 10 - (time.monotonic() - T0)))
        except subprocess.TimeoutExpired:
            job.kill()
            log(f"arm {arm}: evaluation stopped at the deadline")
        report = work / f"report_{tag(arm)}" / "report.json"
        if report.is_file():
            reports[arm] = json.loads(report.read_text())
            card = json.loads((work / f"model_{tag(arm)}" / "model_card.json").read_text())
            result[arm] = {"summary": reports[arm]["summary"], "inputs": reports[arm]["inputs"],
                           "training": card["training"],
                           "train_traces": sum(v.get("traces", 0) for v in card["trace_lengths"].values())}
        log(f"arm {arm}: evaluated (rc {job.returncode})")
    result["table"] = table(reports) if reports else None
    result["seconds"] = round(time.monotonic() - T0, 1)
    Path(args.json or work / "long_quality.json").write_text(json.dumps(result, indent=1))
    print(result["table"] or "no arm was evaluated")
    return 0 if len(reports) == len(arms) else 1


if __name__ == "__main__":
    sys.exit(main())
