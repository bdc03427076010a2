"""What a perfect model of the token representation would give as flows: real traces -> tokens -> decode ->
reconstruct -> pcaps -> the evaluation's nfstream flow figures, per ``model.endpoints`` / ``model.tcp_state`` /
``model.conv_decode`` arm (each trace decoded alone), against the real traces reconstructed as they are (same
nPrint cut, same address plan, their own times).

    python -m benchmarks.conv_roundtrip [DATA_DIR] [--per-class N] [--max-packets N] [--out results.json]

DATA_DIR is a folder of class folders of pcaps (default /work/shared/data/iot-sentinel).  Needs nfstream.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from netdiff_lib.models.native.tokens import FieldTokenizer
from netdiff_lib.nprint.encode import encode_pcap
from netdiff_lib.repair import RepairConfig, reconstruct_batch

ARMS = {"ports": ("ports", "off", "index"), "ports+tcp": ("ports", "enforce", "index"),
        "conv": ("conv", "off", "index"), "conv+tcp": ("conv", "enforce", "index"),
        "conv+tcp+regroup": ("conv", "enforce", "regroup"), "conv+tcp+calibrate": ("conv", "enforce", "calibrate"),
        "conv+handshake+regroup": ("conv", "handshake", "regroup"),
        "conv+handshake+calibrate": ("conv", "handshake", "calibrate")}


KEYS = ("tcp_udp_flows", "one_packet_share", "packets_median", "duration_ms_median", "syn_open_share",
        "handshake_share", "closed_share", "flows_per_trace")


def flow_figures(paths: list[Path], labels: list[str], workdir: Path,
                 max_packets: int | None = None) -> dict[str, float]:
    """The evaluation's flow figures (:mod:`netdiff_lib.evaluate.flows`: nfstream, pooled) of a set of pcaps
    (each cut to its first ``max_packets`` packets when given)."""
    from netdiff_lib.evaluate.flows import FlowMeter, set_stats

    df, failed = FlowMeter(workdir, max_packets).table([(str(p), lab) for p, lab in zip(paths, labels, strict=True)])
    if failed:
        raise RuntimeError(f"nfstream could not read {failed[0]}")
    stats = set_stats(df, labels)["all"]
    return {k: round(float(stats[k]), 4) for k in KEYS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default="/work/shared/data/iot-sentinel")
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--max-packets", type=int, default=1024)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    traces = []
    for cls in sorted(p for p in Path(args.data).iterdir() if p.is_dir()):
        for pcap in sorted(cls.glob("*.pcap*"))[: args.per_class]:
            t = encode_pcap(pcap, max_packets=args.max_packets).trace
            t.label = cls.name
            traces.append(t)
    mats, labels, iats = [t.matrix for t in traces], [t.label for t in traces], [t.iat_us() for t in traces]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        arms: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {"real": (mats, iats)}
        for arm, (mode, tcp, conv_decode) in ARMS.items():
            tok = FieldTokenizer.fit(mats, labels, endpoints_mode=mode, tcp_state=tcp, conv_decode=conv_decode)
            rng = np.random.default_rng(0)
            out = [tok.decode(*tok.encode(m, i), rng=rng, labels=[lab]) for m, i, lab in zip(mats, iats, labels,
                                                                                              strict=True)]
            arms[arm] = ([o[0] for o in out], [o[1] for o in out])
        for arm, (ms, ts) in arms.items():
            recs = reconstruct_batch(ms, iat_us=ts, labels=labels, config=RepairConfig(seed=0))
            paths = [r.write(Path(tmp) / f"{arm}_{i}.pcap") for i, r in enumerate(recs)]
            results[arm] = flow_figures(paths, labels, Path(tmp))
            print(arm, results[arm], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
