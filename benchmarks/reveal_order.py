"""One trained model, several sampling orders (``diffusion.reveal``, any ``diffusion.*`` sampling setting): per
arm, N traces per class from the same weights and seed, the conversation figures of the sampled tokens (before
decoding regroups them) and the evaluation's flow figures (nfstream) of the reconstructed pcaps.

    python -m benchmarks.reveal_order --model MODEL --out DIR --per-class 15 \\
        --arm random=diffusion.reveal=random --arm first=diffusion.reveal=structure_first \\
        [--real DIR --max-packets 128] [--json results.json]

Each arm's pcaps go to ``DIR/<arm>/<label>/<label>_<n>.pcap`` (``netdiff evaluate --synthetic DIR/<arm>`` gives
its field JSD).  ``--real``: a folder of class folders of real pcaps whose flow figures (first
``--max-packets`` packets) are printed beside the arms.  Token figures per arm, over the TCP/UDP packets of a
conversation (an index from one opening to the next, as decoding reads it): ``strays`` the packets whose
transport is not their conversation's majority, ``mixed`` the conversations holding two transports, ``lone``
the one-packet conversations.  Needs nfstream.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.conv_roundtrip import flow_figures
from netdiff_lib.generate import write_pcaps
from netdiff_lib.models.native.model import NativeModel, load_model_dir
from netdiff_lib.models.native.sampler import generate_traces


def conversation_figures(traces: list[np.ndarray], conv_col: int, kinds: list[tuple[int, ...]],
                         conversations: int) -> dict[str, float]:
    """Strays, mixed and one-packet conversations of sampled token rows (one ``(packets, fields)`` per trace)."""
    strays = packets = mixed = lone = total = 0
    for rows in traces:
        groups: dict[tuple[int, int], list[int]] = {}
        epoch: Counter[int] = Counter()
        for kind, conv in zip(rows[:, 0], rows[:, conv_col], strict=True):
            if conv <= 0 or kind <= 0:
                continue
            k, role = divmod(min(int(conv) - 1, 3 * conversations - 1), 3)
            epoch[k] += role == 0
            groups.setdefault((k, epoch[k]), []).append(kinds[int(kind) - 1][2])  # the transport
        for transports in groups.values():
            top = Counter(transports).most_common(1)[0][1]
            strays, packets = strays + len(transports) - top, packets + len(transports)
            mixed, lone, total = mixed + (top < len(transports)), lone + (len(transports) == 1), total + 1
    return {"strays": strays / max(packets, 1), "mixed": mixed / max(total, 1), "lone": lone / max(total, 1),
            "conversations_per_trace": total / max(len(traces), 1)}


def sample_arm(model: NativeModel, per_class: int, seed: int) -> tuple[list[Any], list[np.ndarray]]:
    """The generated traces and the raw token rows of each (in sampling order; decoding in this thread)."""
    rep, rows = model.representation, []
    plain = rep.sample

    def recording(*args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        tokens, iat = plain(*args, **kwargs)
        lengths = args[3].cpu().numpy()
        rows.extend(np.split(tokens, np.cumsum(lengths)[:-1]))
        return tokens, iat

    rep.sample = recording  # type: ignore[method-assign]
    try:
        traces = generate_traces(model, per_class, seed=seed, progress=False, decode_workers=0)
    finally:
        del rep.sample
    return traces, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--arm", action="append", required=True, metavar="NAME=SETTING[,SETTING]")
    ap.add_argument("--per-class", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real", default="")
    ap.add_argument("--max-packets", type=int, default=128)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    out, results = Path(args.out), {}
    if args.real:
        paths = sorted(Path(args.real).glob("*/*.pcap"))
        results["real"] = flow_figures(paths, [p.parent.name for p in paths], out, args.max_packets)
        print("real", results["real"], flush=True)
    for arm in args.arm:
        name, _, settings = arm.partition("=")
        model = load_model_dir(args.model)
        model.config = model.config.with_settings(settings.split(","))
        traces, rows = sample_arm(model, args.per_class, args.seed)
        tok = model.representation.tokenizer
        figures = conversation_figures(rows, tok.col("conv"), list(tok.kinds), tok.conversations)
        paths = write_pcaps(traces, out / name, model.layout, seed=args.seed, progress=False)
        figures.update(flow_figures(paths, [p.parent.name for p in paths], out))
        results[name] = {k: round(v, 4) for k, v in figures.items()}
        print(name, results[name], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
