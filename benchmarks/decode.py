"""Host decoding of the native generator alone: traces/s of turning sampled tokens into nPrint rows, per core and
beside a busy sampling loop, in a thread of the sampling process (the old path) and in worker processes.

The batch is real: the token rows of labelled captures (``--data``: class folders of pcaps, default the bundled
samples), fitted and encoded with the preset's tokenizer settings, laid end to end and tiled into ``--traces``
traces of ``--packets`` packets, decoded in batches of ``--batch-tokens`` packets like the sampler's.

* ``alone``: one batch decoded in the calling thread, nothing else running: the decoding's cost per core, split
  into its halves (``decode_packed``: tokens -> packed header bytes; ``expand``: -> nPrint rows).
* ``beside_loop``: all batches through :class:`~netdiff_lib.models.native.host_decode.HostDecoder` while the
  main thread runs a stand-in for the sampling loop (Python for ``--loop-duty`` of the time, waiting the rest, as
  a loop that drives a GPU): traces/s of the decoding and the loop's speed against the loop alone, for
  ``--workers 0`` (a thread: the old path) and each other count.

* ``--against COMMIT``: the same batch decoded alone by the library of an earlier commit (``git archive``, run in a
  subprocess: ``FieldTokenizer.decode``) and by today's, interleaved ``--repeat`` times (best of each): traces/s
  per core, the speed-up, and whether the rows are the same.

    python -m benchmarks.decode --traces 256 --workers 0 2 4 [--data DIR] [--against 40fa2ac] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SAMPLES = str(Path(__file__).resolve().parents[1] / "samples" / "captures")


def _batches(args: argparse.Namespace) -> tuple[Any, list[tuple[Any, np.ndarray, list[str]]]]:
    from netdiff_lib.config import preset
    from netdiff_lib.models.native.field_tokens import FieldTokens
    from netdiff_lib.nprint.encode import encode_pcap

    traces = []
    for pcap in sorted(Path(args.data).glob("*/*.pcap*"))[:: args.every]:
        t = encode_pcap(pcap, max_packets=args.packets).trace
        t.label = pcap.parent.name
        traces.append(t)
    if not traces:
        raise SystemExit(f"no captures under {args.data}/<class>/")
    rep = FieldTokens.fit(preset(args.config), traces, [t.label for t in traces])
    enc = [rep.tokenizer.encode(t.matrix, t.iat_us()) for t in traces]
    rows, iat = np.concatenate([e[0] for e in enc]), np.concatenate([e[1] for e in enc])
    need = args.traces * args.packets
    reps = -(-need // len(rows))
    rows, iat = np.tile(rows, (reps, 1))[:need].astype(np.int32), np.tile(iat, reps)[:need]
    per = max(1, args.batch_tokens // args.packets)
    out = []
    for a in range(0, args.traces, per):
        b = min(a + per, args.traces)
        labels = [traces[i % len(traces)].label for i in range(a, b)]
        out.append(((rows[a * args.packets : b * args.packets], iat[a * args.packets : b * args.packets]),
                    np.full(b - a, args.packets), labels))
    return rep, out


def _alone(rep: Any, batch: tuple[Any, np.ndarray, list[str]], repeat: int) -> dict[str, float]:
    codec = rep.host_codec()
    codec.expand(codec.decode_compact(*batch, np.random.default_rng(0)))  # warm caches
    best = {"decode_packed_s": np.inf, "expand_s": np.inf}
    for _ in range(repeat):
        t0 = time.perf_counter()
        packed = codec.decode_compact(*batch, np.random.default_rng(0))
        t1 = time.perf_counter()
        codec.expand(packed)
        t2 = time.perf_counter()
        best = {"decode_packed_s": min(best["decode_packed_s"], t1 - t0), "expand_s": min(best["expand_s"], t2 - t1)}
    n = len(batch[1])
    total = best["decode_packed_s"] + best["expand_s"]
    return {"traces": n, **{k: round(v, 4) for k, v in best.items()}, "traces_per_s_per_core": round(n / total, 1)}


_AGAINST = """
import json, sys, time
import numpy as np
from netdiff_lib.models.native.tokens import FieldTokenizer
d = np.load(sys.argv[1])
tok = FieldTokenizer.from_dict(json.loads(str(d["tokenizer"])))
labels = [str(x) for x in d["labels"]]
best = float("inf")
for _ in range(int(sys.argv[3]) + 1):
    t0 = time.perf_counter()
    m, _ = tok.decode(d["rows"], d["iat"], d["trace_of"], np.random.default_rng(0), labels)
    best = min(best, time.perf_counter() - t0)
np.save(sys.argv[2], m)
print(json.dumps({"decode_s": best}))
"""


def _against(rep: Any, batch: tuple[Any, np.ndarray, list[str]], commit: str, repeat: int) -> dict[str, Any]:
    """Decode ``batch`` alone with the library of ``commit``; compare its rows with today's."""
    root = Path(__file__).resolve().parents[1]
    (rows, iat), lengths, labels = batch
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(root), "archive", commit, "netdiff_lib"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        np.savez(f"{tmp}/batch.npz", rows=rows, iat=iat, trace_of=np.repeat(np.arange(len(lengths)), lengths),
                 labels=np.array(labels), tokenizer=json.dumps(rep.tokenizer.to_dict()))
        env = {**os.environ, "PYTHONPATH": tmp}
        codec, old, new = rep.host_codec(), [], []
        for _ in range(repeat):  # interleaved, so that both see the same load
            run = subprocess.run([sys.executable, "-c", _AGAINST, f"{tmp}/batch.npz", f"{tmp}/old.npy", "1"],
                                 env=env, check=True, capture_output=True, text=True, cwd=tmp)
            old.append(json.loads(run.stdout.strip().splitlines()[-1])["decode_s"])
            t0 = time.perf_counter()
            today = codec.expand(codec.decode_compact(*batch, np.random.default_rng(0)))[0]
            new.append(time.perf_counter() - t0)
        same = np.array_equal(np.load(f"{tmp}/old.npy"), today)
    n = len(lengths)
    return {"commit": commit, "traces": n, "decode_s": round(min(old), 4), "today_s": round(min(new), 4),
            "traces_per_s_per_core": round(n / min(old), 1), "today_traces_per_s_per_core": round(n / min(new), 1),
            "speedup": round(min(old) / min(new), 2), "same_rows": bool(same)}


def _spin(until: Any, duty: float) -> int:
    """A stand-in for the sampling loop until ``until()`` is true: Python for ``duty`` of each millisecond-scale
    cycle, sleeping the rest (like a thread waiting on the GPU, lock released); returns its Python iterations."""
    n = 0
    while not until():
        end = time.perf_counter() + 0.002 * duty
        while time.perf_counter() < end:
            for _ in range(100):
                n += 1
        if duty < 1:
            time.sleep(0.002 * (1 - duty))
    return n


def _beside_loop(rep: Any, batches: list[Any], workers: int, owner: Any, duty: float) -> dict[str, Any]:
    from netdiff_lib.models.native.host_decode import HostDecoder, wait_ready

    clock = {"host_s": 0.0}
    with HostDecoder(rep, workers, clock, owner=owner) as dec:
        if workers:  # start the pool before timing (the sampler keeps it per model)
            dec.submit(*batches[-1][:3], 0).result()
            wait_ready(owner)
            clock["host_s"] = 0.0
        t0 = time.perf_counter()
        jobs = [dec.submit(*b, i) for i, b in enumerate(batches)]
        spins = _spin(lambda: all(j.done() for j in jobs), duty)
        dt = time.perf_counter() - t0
    t1 = time.perf_counter()
    alone = _spin(lambda: time.perf_counter() - t1 >= dt, duty)
    traces = sum(len(b[1]) for b in batches)
    return {"workers": workers, "traces": traces, "seconds": round(dt, 3), "traces_per_s": round(traces / dt, 1),
            "decode_cpu_s": round(clock["host_s"], 3), "loop_speed_vs_alone": round(spins / max(alone, 1), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=SAMPLES, help="class folders of captures whose tokens make the batch")
    p.add_argument("--every", type=int, default=1, help="take every k-th capture (for large data sets)")
    p.add_argument("--config", default="base", help="preset whose tokenizer settings to fit")
    p.add_argument("--traces", type=int, default=256)
    p.add_argument("--packets", type=int, default=1024)
    p.add_argument("--batch-tokens", type=int, default=131_072, help="packets per decoded batch")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="0: a thread (the old path); N: processes")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--against", metavar="COMMIT", help="also decode alone with the library of this commit")
    p.add_argument("--loop-duty", type=float, default=0.5,
                   help="share of the time the stand-in sampling loop runs Python (the rest it waits, lock released)")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    rep, batches = _batches(args)

    class Owner:  # holds the process pools, as a loaded model does
        pass

    owner = Owner()
    result = {"benchmark": "decode", "packets": args.packets, "cpus": os.cpu_count(), "loop_duty": args.loop_duty,
              "alone": _alone(rep, batches[0], args.repeat)}
    if args.against:
        result["against"] = _against(rep, batches[0], args.against, args.repeat)
    print(json.dumps(result), flush=True)
    result["beside_loop"] = []
    for w in args.workers:
        result["beside_loop"].append(_beside_loop(rep, batches, w, owner, args.loop_duty))
        print(json.dumps(result["beside_loop"][-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
