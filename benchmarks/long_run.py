"""A long capture end to end, each stage timed in a fresh process with its peak RSS: build, encode, train,
generate, evaluate.

    python -m benchmarks.long_run --work DIR [--packets 10000000] [--source DIR]... [--train-budget S]
                                  [--config tiny|small|base] [--json FILE]

Stages (each ``python -m ...`` or ``netdiff ...`` in its own process; time, CPU time and peak RSS from
``os.wait4``, i.e. of the process and the children it waited for):

1. ``build``: :mod:`benchmarks.long_capture` writes ``capture.pcap`` (``--packets``, from the project's recorded
   samples and every ``--source``) with a CIC-IDS2017 CSV and an IoT-23 conn.log of its flows;
2. ``encode_cic`` / ``encode_zeek``: ``netdiff encode --traces flow --labels <file> --format npz`` (and
   ``--format store`` too when this netdiff has it: ``--format auto``); the encoded size against the pcap size;
3. ``train`` (``--train-budget`` seconds, 0 to skip): ``netdiff train --traces flow --labels <CIC CSV>`` on the
   capture (native backend, ``--config``, privacy gate off: the time is the trainer's); the traces it saw;
4. ``generate``: ``netdiff generate --per-class N``; ``cut``: :mod:`benchmarks.trace_pcaps` writes two disjoint
   samples of real flow traces of the first ``--eval-packets`` packets as pcaps; ``evaluate``: ``netdiff
   evaluate`` of the generated traces against them (a timing of the stage, not a quality figure: the model saw
   every flow; see :mod:`benchmarks.long_quality` for quality).

The result is one JSON object (stdout and ``--json``; default WORK/long_run.json). The full size (>= 10 million
packets, >= 100,000 training traces) is for the GPU machine; ``--packets 200000`` runs here in minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PY = [sys.executable]
STAGES = "build,encode,train,evaluate"
NETDIFF = [sys.executable, "-m", "netdiff_lib.cli"]


def stage(name: str, cmd: list[str], log: Path) -> dict[str, Any]:
    """Run ``cmd`` (output to ``log``), timed, with the peak RSS and CPU time of its process tree."""
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    out = {"seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
           "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "rc": rc}
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        out["error"] = " | ".join(tail)
        print(f"  {name} failed (rc {rc}): {out['error']}", file=sys.stderr)
    return out


def fresh(path: Path) -> Path:
    """``path``, its earlier contents removed (a stage run again writes anew)."""
    if path.is_dir():
        shutil.rmtree(path)
    return path


def size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def count(path: Path, suffix: str) -> int:
    return sum(1 for p in path.rglob(f"*{suffix}") if p.is_file()) if path.exists() else 0


def has_store() -> bool:
    """Whether this netdiff's ``encode --format`` offers ``store`` (the compact store format)."""
    text = subprocess.run([*NETDIFF, "encode", "--help"], capture_output=True, text=True).stdout
    return "store" in text


def _encode(args: argparse.Namespace, cap: Path, work: Path, log: Path, res: dict[str, Any]) -> None:
    store = has_store()  # one `netdiff encode --help` for every run below
    formats = ["npz"] + (["store"] if args.format == "store" or (args.format == "auto" and store) else [])
    pcap_bytes = size(cap / "capture.pcap")
    files = {"cic": cap / "capture.pcap_ISCX.csv", "zeek": cap / "conn.log.labeled"}
    for tag, labels in ((t, files[t]) for t in args.encode_labels.split(",")):
        for fmt in formats:
            name = f"encode_{tag}" + ("" if fmt == "npz" else f"_{fmt}")
            out = fresh(work / name)
            extra = ["--format", fmt] if fmt == "store" or store else []  # cut traces default to the store
            r = stage(name, [*NETDIFF, "encode", str(cap / "capture.pcap"), "-o", str(out), "-q", "--traces", "flow",
                             "--labels", str(labels), *extra], log)
            r |= {"packets_per_s": round(res["build"].get("packets", 0) / r["seconds"]) if r["seconds"] else None,
                  "encoded_bytes": size(out) if out.exists() else 0, "files": count(out, "")}
            r["encoded_vs_pcap"] = round(r["encoded_bytes"] / pcap_bytes, 4) if pcap_bytes else None
            res[name] = r


def _train(args: argparse.Namespace, cap: Path, work: Path, log: Path, res: dict[str, Any]) -> Path | None:
    data = work / "data" / "long"  # train --data wants <label>/*.pcap: the label file overrides the folder's
    data.mkdir(parents=True, exist_ok=True)
    (data / "capture.pcap").unlink(missing_ok=True)
    if args.train_packets:
        from benchmarks.trace_pcaps import head

        head(cap / "capture.pcap", args.train_packets, data / "capture.pcap")
    else:
        (data / "capture.pcap").symlink_to((cap / "capture.pcap").resolve())
    model = fresh(work / "model")
    cmd = [*NETDIFF, "train", "--data", str(args.train_data or data.parent), "-o", str(model), "--config",
           args.config, "--time-budget", str(args.train_budget), "--privacy", "off", "-q", "--traces", "flow",
           "--labels", str(cap / "capture.pcap_ISCX.csv"), "--max-packets", str(args.max_packets)]
    res["train"] = r = stage("train", cmd + ([] if args.gpus is None else ["--gpus", str(args.gpus)]), log)
    card = model / "model_card.json"
    if r["rc"] == 0 and card.is_file():
        c = json.loads(card.read_text())
        traces = {k: v.get("traces", 0) for k, v in c.get("trace_lengths", {}).items()}
        r |= {"traces": sum(traces.values()), "classes": len(traces), "training": c.get("training", {})}
        return model
    return None


def _generate_evaluate(args: argparse.Namespace, cap: Path, model: Path, work: Path, log: Path,
                       res: dict[str, Any]) -> None:
    syn = fresh(work / "synthetic")
    res["generate"] = r = stage("generate", [*NETDIFF, "generate", "--model", str(model), "--per-class",
                                             str(args.per_class), "-o", str(syn), "-q", "--compile", "off"], log)
    r["traces"] = count(syn, ".pcap")
    real = [fresh(work / "real_a"), fresh(work / "real_b")]
    fresh(work / "report")
    res["cut"] = stage("cut", [*PY, "-m", "benchmarks.trace_pcaps", str(cap / "capture.pcap"), "--out",
                               *map(str, real), "--traces", "flow", "--labels", str(cap / "capture.pcap_ISCX.csv"),
                               "--per-class", str(args.eval_per_class), "--head", str(args.eval_packets)], log)
    res["cut"]["traces"] = [count(p, ".pcap") for p in real]
    res["evaluate"] = r = stage("evaluate", [*NETDIFF, "evaluate", "--real-train", str(real[0]), "--real-test",
                                             str(real[1]), "--synthetic", str(syn), "-o", str(work / "report"),
                                             "-q", "--no-plots"], log)
    report = work / "report" / "report.json"
    if r["rc"] == 0 and report.is_file():
        rep = json.loads(report.read_text())
        r |= {"summary": rep.get("summary"), "timings_s": rep.get("timings_s")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "long_run.log"
    cap = Path(args.capture) if args.capture else work / "capture"
    saved = work / "long_run.json"  # stages run in several calls add up in one result
    res: dict[str, Any] = json.loads(saved.read_text()) if saved.is_file() and args.stages != STAGES else {}
    res |= {"host": {"machine": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "args": {k: v for k, v in vars(args).items() if k != "json"}}
    stages = args.stages.split(",")
    if "build" in stages:
        sources = [x for s in args.source or [] for x in ("--source", s)]
        sources = ["--source", "samples/captures", *sources] if sources else []
        res["build"] = stage("build", [*PY, "-m", "benchmarks.long_capture", str(cap), "--packets",
                                       str(args.packets), "--rate", str(args.rate), *sources], log)
        if res["build"]["rc"]:
            return res
        res["build"] |= json.loads((cap / "build.json").read_text())
    elif "build" not in res:
        res["build"] = {"reused": str(cap)} | json.loads((cap / "build.json").read_text())
    if "encode" in stages:
        _encode(args, cap, work, log, res)
    model = work / "model"
    if "train" in stages and args.train_budget > 0:
        model = _train(args, cap, work, log, res)
    if "evaluate" in stages and model is not None and (model / "model_card.json").is_file() and args.per_class:
        _generate_evaluate(args, cap, model, work, log, res)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", required=True, help="folder for the capture, encodings, model and reports")
    p.add_argument("--packets", type=int, default=10_000_000)
    p.add_argument("--source", action="append", help="more <label>/*.pcap folders to replay (besides the samples)")
    p.add_argument("--rate", type=float, default=1000.0, help="packets per second of the built capture")
    p.add_argument("--capture", help="the folder the builder writes (default WORK/capture)")
    p.add_argument("--stages", default=STAGES, help="which stages to run (several calls add to WORK/long_run.json)")
    p.add_argument("--encode-labels", default="cic,zeek", help="label files to encode with: cic, zeek or both")
    p.add_argument("--train-packets", type=int, help="train on the first N packets of the capture (default all)")
    p.add_argument("--format", choices=("auto", "npz", "store"), default="auto",
                   help="encode formats besides npz: store when netdiff has it (auto), or not (npz)")
    p.add_argument("--train-budget", type=float, default=60.0, help="training seconds (0: no training)")
    p.add_argument("--train-data", help="what train --data gets instead of the capture (e.g. an encoded store)")
    p.add_argument("--config", default="tiny", help="native preset: tiny, small, base")
    p.add_argument("--gpus", type=int, help="train --gpus N")
    p.add_argument("--max-packets", type=int, default=1024, help="packets per trace at most")
    p.add_argument("--per-class", type=int, default=2, help="generated traces per class (0: no generation)")
    p.add_argument("--eval-packets", type=int, default=200_000, help="real traces are cut from this many packets")
    p.add_argument("--eval-per-class", type=int, default=10, help="real traces per class in each real set")
    p.add_argument("--json", help="write the result here too (default WORK/long_run.json)")
    args = p.parse_args(argv)
    res = run(args)
    text = json.dumps(res, indent=1)
    print(text)
    Path(args.json or Path(args.work) / "long_run.json").write_text(text)
    failed = [k for k, v in res.items() if isinstance(v, dict) and v.get("rc")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
