"""Native generator benchmarks: training speed, generation throughput, and the evaluation set of a GPU run.

Sub-commands (each prints one JSON object and can write it with ``--json``):

* ``train-speed``: steps/s and tokens/s of the training step (the representation's loss, backward, AdamW, EMA)
  for a preset at one length bucket, on the rows of ``--data`` (default: the bundled sample captures) laid end
  to end; bf16 autocast on CUDA.
* ``throughput``: traces/s of :func:`netdiff_lib.models.native.sampler.generate_traces` at a fixed trace length
  (1,024 packets by default), after one warm-up batch of the same shape (which compiles), as the model samples
  by default (``generate.compile``: compiled on CUDA), or with ``--compile [BACKEND]`` (inductor by default)
  eager and compiled side by side in one run, with the speed-up and the share of identical traces; peak GPU memory;
  ``--decode-workers 0 -1``: each run with the host decoding in a thread (the old path) and in worker processes.
* ``pcaps``: the pcaps of a ``generated.npz`` (reconstruction on the CPU, same seed as ``generate-set``).
* ``generate-set``: ``--times`` x the test captures of each class of a ``split.json`` (``netdiff split``), per
  guidance value, as ``<label>/<label>_<n>.pcap`` (reconstructed) plus one compressed array file of the raw generator
  output; then, in the same process, the throughput as the model samples by default (saves a model load and
  CUDA start per run).

    python -m benchmarks.train_native train-speed --config tiny --bucket 64 --steps 20
    python -m benchmarks.train_native throughput --model MODEL --packets 1024 --traces 256 --guidance 1.0 1.5
    python -m benchmarks.train_native generate-set --model MODEL --split split.json --out DIR --guidance 1.0 1.5

``benchmarks/gpu_native.sh`` runs them on a GPU machine around ``python -m netdiff_lib.cli train``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netdiff_lib.cli._options import add_sample_steps
from netdiff_lib.config import DiffusionConfig

SAMPLES = str(Path(__file__).resolve().parents[1] / "samples" / "captures")


def _device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def train_speed(args: argparse.Namespace) -> dict[str, Any]:
    from netdiff_lib.config import preset
    from netdiff_lib.encoded import from_captures
    from netdiff_lib.models.native.data import prepare_data
    from netdiff_lib.models.native.layers import count_parameters
    from netdiff_lib.models.native.train import make_optimizer

    cfg = preset(args.config).with_settings(["data.stream=off"])  # the rows packed, whatever the data's size
    dev = _device(args.device)
    bucket = args.bucket or cfg.model.max_packets
    batch = max(1, cfg.train.batch_tokens // bucket)
    prep = prepare_data(cfg, from_captures(args.data, cfg.model.max_packets))
    rep, n_classes = prep.representation, len(prep.labels)
    rows = prep.packed.features[:-1]  # every packet's row, the padding row left out
    x0 = rows[torch.arange(batch * bucket) % len(rows)].view(batch, bucket, -1).to(dev)
    torch.manual_seed(0)
    net = rep.network(cfg, n_classes).to(dev)
    opt = make_optimizer(net, cfg)
    ema = [p.detach().clone().float() for p in net.parameters()]
    labels = torch.randint(0, n_classes, (batch,), device=dev)
    lengths = torch.full((batch,), bucket, device=dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    use_bf16 = dev.type == "cuda"

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss, _ = rep.loss(net, net, cfg, x0, labels, lengths, gen, padded=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach().float() for p in net.parameters()], 1e-3)

    for _ in range(args.warmup):
        step()
    _sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync()
    dt = (time.perf_counter() - t0) / args.steps
    return {"benchmark": "train-speed", "config": args.config, "representation": rep.name, "device": _name(dev),
            "parameters": count_parameters(net), "bucket": bucket, "batch": batch, "s_per_step": round(dt, 5),
            "steps_per_s": round(1 / dt, 3), "tokens_per_s": round(batch * bucket / dt),
            "peak_gpu_memory_gib": _peak_gib()}


def _name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def _throughput(model: Any, dev: torch.device, guidance: float, args: argparse.Namespace,
                compile: str | None = None, keep: list[Any] | None = None, workers: int = -1) -> dict[str, Any]:
    """traces/s at a fixed length, after one warm-up batch of the same shape (which compiles, when compiling, and
    starts the decoding processes); ``compile``: ``on``/``off``, or None for the model's ``generate.compile``;
    ``workers``: decoding processes (0: a thread, -1: as the timed request would by default); ``keep`` receives
    the traces."""
    from netdiff_lib.models.native.compiled import wanted
    from netdiff_lib.models.native.host_decode import auto_workers, wait_ready
    from netdiff_lib.models.native.sampler import generate_traces

    if workers < 0:
        workers = auto_workers(dev, -(-args.traces * args.packets // args.batch_tokens))
    opts = {"steps": args.steps, "guidance": guidance, "length": args.packets, "progress": False,
            "batch_tokens": args.batch_tokens, "compile": compile, "decode_workers": workers}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    generate_traces(model, _spread(model.labels, min(args.traces, args.batch_tokens // args.packets)), **opts)
    wait_ready(model)
    _sync()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    clock: dict[str, float] = {}
    traces = generate_traces(model, _spread(model.labels, args.traces), seed=1, timings=clock, **opts)
    _sync()
    dt = time.perf_counter() - t0
    if keep is not None:
        keep.append(traces)
    compiled = wanted(compile or model.config.generate.compile, dev, args.traces * args.packets)
    return {"benchmark": "throughput", "device": _name(dev), "packets": len(traces[0].matrix),
            "traces": len(traces), "steps": args.steps, "guidance": guidance,
            "compiled": model.config.generate.compile_backend if compiled else False, "decode_workers": workers,
            "batch_tokens": args.batch_tokens, "warmup_s": round(warm, 2), "seconds": round(dt, 3),
            "traces_per_s": round(len(traces) / dt, 2), "peak_gpu_memory_gib": _peak_gib(),
            "device_s": round(clock["device_s"], 3), "host_decode_s": round(clock["host_s"], 3)}


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """The model's default sampling, or with ``--compile [BACKEND]`` eager and compiled side by side (same
    model, same seeds: ``same_traces`` is the share of traces the two give identically)."""
    from dataclasses import replace

    from netdiff_lib.models.native.model import load_model_dir

    dev = _device(args.device)
    model = load_model_dir(args.model, device=dev)
    if not args.compile:
        mode = "off" if args.eager else None
        return {"runs": [_throughput(model, dev, g, args, mode, workers=w) for g in args.guidance
                         for w in args.decode_workers]}
    model.config = replace(model.config, generate=replace(model.config.generate, compile_backend=args.compile))
    runs, pairs = [], []
    for g, w in ((g, w) for g in args.guidance for w in args.decode_workers):
        eager: list[Any] = []
        compiled: list[Any] = []
        runs.append(_throughput(model, dev, g, args, "off", eager, w))
        print(json.dumps(runs[-1]), flush=True)
        runs.append(_throughput(model, dev, g, args, "on", compiled, w))
        print(json.dumps(runs[-1]), flush=True)
        same = sum(np.array_equal(a.matrix, b.matrix) for a, b in zip(eager[0], compiled[0], strict=True))
        pairs.append({"guidance": g, "decode_workers": runs[-1]["decode_workers"],
                      "speedup": round(runs[-1]["traces_per_s"] / runs[-2]["traces_per_s"], 3),
                      "same_traces": round(same / len(eager[0]), 4)})
    return {"runs": runs, "compiled_vs_eager": pairs}


def _spread(labels: list[str], n: int) -> dict[str, int]:
    """``n`` traces spread over the labels as evenly as possible."""
    base, extra = divmod(n, len(labels))
    return {lab: base + (i < extra) for i, lab in enumerate(labels)}


def _save_arrays(path: Path, traces: list[Any], layout: Any) -> None:
    """One compressed file; the ternary matrix packed to 2 bits (see :func:`load_generated`)."""
    from netdiff_lib.generate import trace_names

    matrix = np.concatenate([t.matrix for t in traces])
    np.savez_compressed(
        path, present=np.packbits(matrix >= 0, axis=1), bits=np.packbits(matrix > 0, axis=1),
        width=matrix.shape[1], lengths=np.array([len(t.matrix) for t in traces]),
        iat_us=np.concatenate([t.iat_us for t in traces]).astype(np.float32), names=np.array(trace_names(traces)),
        labels=np.array([t.label for t in traces]), layout=json.dumps(layout.to_dict()),
    )


def generate_set(args: argparse.Namespace) -> dict[str, Any]:
    """For each guidance value: generate, save arrays, reconstruct pcaps; then (optionally) eager throughput."""
    from netdiff_lib.generate import write_pcaps
    from netdiff_lib.models.native.model import load_model_dir
    from netdiff_lib.models.native.sampler import generate_traces

    split = json.loads(Path(args.split).read_text())
    test_counts = Counter(c["label"] for c in split["test"])
    dev = _device(args.device)
    model = load_model_dir(args.model, device=dev)
    per_class = {lab: args.times * test_counts[lab] for lab in model.labels if test_counts.get(lab, 0)}
    result: dict[str, Any] = {"per_class": per_class, "sets": [], "throughput": []}
    for g in args.guidance:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        traces = generate_traces(model, per_class, steps=args.steps, guidance=g, seed=args.seed,
                                 batch_tokens=args.batch_tokens, progress=False)
        _sync()
        t_gen = time.perf_counter() - t0
        out = Path(args.out) / f"g{g}"
        out.mkdir(parents=True, exist_ok=True)
        _save_arrays(out / "generated.npz", traces, model.layout)
        t1 = time.perf_counter()
        if not args.no_pcaps:
            write_pcaps(traces, out / "pcaps", model.layout, seed=args.seed, progress=False)
        result["sets"].append({
            "guidance": g, "device": _name(dev), "traces": len(traces), "steps": args.steps,
            "packets": int(sum(len(t.matrix) for t in traces)), "sampling_s": round(t_gen, 2),
            "traces_per_s": round(len(traces) / t_gen, 2), "reconstruction_s": round(time.perf_counter() - t1, 2),
            "peak_gpu_memory_gib": _peak_gib(), "out": str(out)})
        print(json.dumps(result["sets"][-1]), flush=True)
    if args.throughput_traces:
        args.traces = args.throughput_traces
        for g in args.guidance:
            result["throughput"].append(_throughput(model, dev, g, args))
            print(json.dumps(result["throughput"][-1]), flush=True)
    return result


def pcaps(args: argparse.Namespace) -> dict[str, Any]:
    """Reconstruct the pcaps of a ``generated.npz`` (what ``generate-set`` writes on the GPU with the same seed)."""
    from netdiff_lib.generate import write_pcaps
    from netdiff_lib.payloads import PayloadProfile
    from netdiff_lib.schema import Layout

    payloads = PayloadProfile.load(args.payloads) if args.payloads else None
    traces = load_generated(args.generated)
    with np.load(args.generated) as z:
        layout = Layout.from_dict(json.loads(str(z["layout"])))
    t0 = time.perf_counter()
    paths = write_pcaps(traces, args.out, layout, seed=args.seed, progress=False, payloads=payloads)
    return {"benchmark": "pcaps", "traces": len(paths), "packets": int(sum(len(t.matrix) for t in traces)),
            "reconstruction_s": round(time.perf_counter() - t0, 2), "out": str(args.out)}


def load_generated(path: str | Path) -> list[Any]:
    """The traces of a ``generated.npz`` written by ``generate-set`` (as :class:`GeneratedTrace`)."""
    from netdiff_lib.models.base import GeneratedTrace

    with np.load(path) as z:
        width = int(z["width"])
        present = np.unpackbits(z["present"], axis=1, count=width).astype(bool)
        bits = np.unpackbits(z["bits"], axis=1, count=width).astype(np.int8)
        matrix = np.where(present, bits, np.int8(-1)).astype(np.int8)
        ends = np.cumsum(z["lengths"])
        return [GeneratedTrace(m, i.astype(np.float64), str(lab)) for m, i, lab in
                zip(np.split(matrix, ends[:-1]), np.split(z["iat_us"], ends[:-1]), z["labels"], strict=True)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    ts = sub.add_parser("train-speed")
    ts.add_argument("--config", default="base")
    ts.add_argument("--bucket", type=int, help="trace length (default: the preset's max_packets)")
    ts.add_argument("--steps", type=int, default=20)
    ts.add_argument("--warmup", type=int, default=3)
    ts.add_argument("--data", default=SAMPLES, help="labelled captures whose rows the steps train on")
    tp = sub.add_parser("throughput")
    tp.add_argument("--model", required=True)
    tp.add_argument("--traces", type=int, default=256)
    tp.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                    help="time eager and torch.compile sampling side by side (backend: inductor, or e.g. "
                         "aot_eager); without it, the model's default (generate.compile: compiled on CUDA)")
    tp.add_argument("--eager", action="store_true", help="eager sampling only (generate.compile=off)")
    tp.add_argument("--decode-workers", type=int, nargs="+", default=[-1], metavar="N",
                    help="decoding processes, one run each: 0 = a thread of the sampling process (the old path), "
                         "-1 = the default (processes on CUDA)")
    gs = sub.add_parser("generate-set")
    gs.add_argument("--model", required=True)
    gs.add_argument("--split", required=True, help="split.json written by `netdiff split`")
    gs.add_argument("--times", type=int, default=5, help="generated traces per test capture of a class")
    gs.add_argument("--out", required=True, help="writes OUT/g<guidance>/{generated.npz,pcaps/}")
    gs.add_argument("--seed", type=int, default=0)
    gs.add_argument("--throughput-traces", type=int, default=0, help="then time this many traces at --packets")
    gs.add_argument("--no-pcaps", action="store_true", help="only the arrays (rebuild pcaps elsewhere: pcaps)")
    pc = sub.add_parser("pcaps")
    pc.add_argument("generated", help="generated.npz of generate-set")
    pc.add_argument("--out", required=True)
    pc.add_argument("--seed", type=int, default=0)
    pc.add_argument("--payloads", help="payloads.json (or a model folder holding one) for the payload synthesis")
    for q in (tp, gs):
        add_sample_steps(q, "sampler steps", aliases=("--steps",), dest="steps", default=DiffusionConfig.sample_steps)
        q.add_argument("--guidance", type=float, nargs="+", default=[1.0])
        q.add_argument("--packets", type=int, default=1024, help="trace length for the throughput runs")
        q.add_argument("--batch-tokens", type=int, default=131_072, help="packets per sampling batch")
    for q in (ts, tp, gs, pc):
        q.add_argument("--device")
        q.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    commands = {"train-speed": train_speed, "throughput": throughput, "generate-set": generate_set, "pcaps": pcaps}
    result = commands[args.cmd](args)
    result["torch"] = torch.__version__
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
