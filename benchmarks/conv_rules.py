"""The native decoding rules on one model's samples (same weights, same sampled tokens for every arm).

* ``train``: the CPU model of BENCHMARKS.md ("CPU, same weights for every arm"): ``tiny`` with d=96, 3 layers,
  128 packets, buckets 32/64/128, 2,048 tokens a batch, 2,000 steps, seed 0, on a split's ``train`` folder
  (``netdiff split DATA -o SPLIT --test-fraction 0.2 --mode link``).
* ``arms``: samples ``--per-class`` traces per class once (lengths drawn from the class's training traces,
  batches as the sampler makes them), keeps the tokens, then decodes them per arm (``model.conv_decode`` x
  ``model.tcp_state``: :data:`ARMS`), batch by batch as the sampler does, with the same seed per arm, and
  reconstructs ``OUT/<arm>/<label>/*.pcap``; prints and writes (``OUT/arms.json``) the evaluation's nfstream flow
  figures of each arm and of ``--real`` (the test captures, at the model's packets).  The one-packet shares of
  ``calibrate`` are fitted on ``--train`` (the model's training captures) when the model folder lacks them.

    python -m benchmarks.conv_rules train SPLIT/train MODEL
    python -m benchmarks.conv_rules arms MODEL --train SPLIT/train --real SPLIT/test --out OUT
    netdiff evaluate --real-train SPLIT/train --real-test SPLIT/test --synthetic OUT/<arm> --max-packets 128 ...
    netdiff validate OUT/<arm>
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: arm -> (conv_decode, tcp_state)
ARMS = {"regroup": ("regroup", "enforce"), "merge": ("merge", "enforce"), "calibrate": ("calibrate", "enforce"),
        "handshake": ("regroup", "handshake"), "calibrate+handshake": ("calibrate", "handshake")}


def train(args: argparse.Namespace) -> None:
    from netdiff_lib.config import tiny
    from netdiff_lib.encoded import from_captures
    from netdiff_lib.models.native.train import train as train_native

    cfg = tiny()
    cfg = replace(cfg, model=replace(cfg.model, d_model=96, n_layers=3, max_packets=128),
                  train=replace(cfg.train, buckets=(32, 64, 128), batch_tokens=2048, steps=args.steps, seed=0))
    train_native(cfg, from_captures(args.data, 128), args.model, progress=False)


def _sample(model: Any, per_class: int, steps: int, seed: int) -> list[tuple[list[str], np.ndarray, Any]]:
    """Batches of (labels, lengths, (tokens, iat)) as the sampler makes them (length buckets, batch tokens)."""
    cfg, rng = model.config, np.random.default_rng(seed)
    reqs = [(lab, int(n)) for lab in model.labels for n in rng.choice(model.length_pool(lab), size=per_class)]
    buckets = np.array(cfg.train.buckets)
    bucket_of = [int(buckets[np.searchsorted(buckets, n)]) for _, n in reqs]
    index = {lab: i for i, lab in enumerate(model.labels)}
    out = []
    for b in sorted(set(bucket_of)):
        todo = [r for r, k in zip(reqs, bucket_of, strict=True) if k == b]
        size = max(1, cfg.train.batch_tokens // b)
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            lens = np.array([n for _, n in chunk])
            gen = torch.Generator().manual_seed(seed * 1000 + len(out))
            host = model.representation.sample(model.net, cfg, torch.tensor([index[lab] for lab, _ in chunk]),
                                               torch.from_numpy(lens), b, steps=steps, guidance=cfg.diffusion.guidance,
                                               gen=gen, padded=bool((lens < b).any()))
            out.append(([lab for lab, _ in chunk], lens, host))
    return out


def _decode(tok: Any, batches: list[tuple[list[str], np.ndarray, Any]], seed: int) -> list[Any]:
    from netdiff_lib.models.base import GeneratedTrace
    from netdiff_lib.models.native.field_tokens import FieldTokens

    rep, traces = FieldTokens(tok), []
    for i, (labels, lens, host) in enumerate(batches):
        matrix, iat = rep.decode(host, lens, labels, np.random.default_rng([seed, i]))
        ends = np.cumsum(lens)[:-1]
        for lab, m, t in zip(labels, np.split(matrix, ends), np.split(iat, ends), strict=True):
            t = t.copy()
            t[0] = 0.0
            traces.append(GeneratedTrace(m, t, lab))
    return traces


def arms(args: argparse.Namespace) -> None:
    from benchmarks.conv_roundtrip import KEYS, flow_figures
    from netdiff_lib.dataset import discover
    from netdiff_lib.encoded import from_captures
    from netdiff_lib.evaluate.flows import FlowMeter, set_stats
    from netdiff_lib.generate import write_pcaps
    from netdiff_lib.models.native.flow_rules import fit_single_rates
    from netdiff_lib.models.native.model import load_model_dir
    from netdiff_lib.models.native.tokens import read_fields
    from netdiff_lib.payloads import load_payloads

    torch.set_num_threads(1)
    model = load_model_dir(args.model)
    tok = model.representation.tokenizer
    rates = tok.single_rates
    if not rates:
        data = from_captures(args.train, model.config.model.max_packets)
        rates = fit_single_rates([read_fields(t.matrix) for t in data.traces], [t.label for t in data.traces])
    batches = _sample(model, args.per_class, args.steps, args.seed)
    out, results = Path(args.out), {}
    work = out / "nfstream"
    work.mkdir(parents=True, exist_ok=True)
    if args.real and args.meter:
        real = [(c.uri, c.label) for c in discover(args.real)]
        df, _ = FlowMeter(work, model.config.model.max_packets).table(real)
        stats = set_stats(df, [lab for _, lab in real])["all"]
        results["real"] = {k: round(float(stats[k]), 4) for k in KEYS}
        print("real", results["real"], flush=True)
    for arm, (conv_decode, tcp_state) in ARMS.items():
        variant = replace(tok, conv_decode=conv_decode, tcp_state=tcp_state, single_rates=rates)
        traces = _decode(variant, batches, args.seed)
        paths = write_pcaps(traces, out / arm, model.layout, seed=args.seed, progress=False,
                            payloads=load_payloads(args.model))
        if args.meter:
            results[arm] = flow_figures(paths, [t.label for t in traces], work)
            print(arm, results[arm], flush=True)
    (out / "arms.json").write_text(json.dumps({"single_rates": rates, "arms": results}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("data", help="labelled captures (<label>/*.pcap): the split's train folder")
    tr.add_argument("model", help="model folder to write")
    tr.add_argument("--steps", type=int, default=2000)
    ar = sub.add_parser("arms")
    ar.add_argument("model")
    ar.add_argument("--train", required=True, help="the model's training captures (one-packet shares)")
    ar.add_argument("--real", help="real test captures: their flow figures beside the arms'")
    ar.add_argument("--out", required=True)
    ar.add_argument("--per-class", type=int, default=15)
    ar.add_argument("--steps", type=int, default=10, help="sampler steps")
    ar.add_argument("--seed", type=int, default=0)
    ar.add_argument("--no-meter", dest="meter", action="store_false",
                    help="write the pcaps only (no nfstream here: meter them with netdiff evaluate elsewhere)")
    args = ap.parse_args()
    train(args) if args.cmd == "train" else arms(args)


if __name__ == "__main__":
    main()
