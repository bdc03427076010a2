"""``netdiff generate``: synthetic traces from a trained model folder, as pcaps ``OUT/<label>/<label>_<n>.pcap``
(the layout of ``netdiff run``'s ``pcaps/`` folder)."""

from __future__ import annotations

import argparse
import sys
import time

from netdiff_lib.cli._options import add_out, add_quiet, add_sample_steps

NAME = "generate"
HELP = "generate N synthetic pcaps per class from a trained model folder"
ORDER = 45


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="folder written by `netdiff train`")
    p.add_argument("--per-class", type=int, required=True, metavar="N", help="traces per class")
    add_out(p, "folder for the pcaps: OUT/<label>/<label>_<n>.pcap, as netdiff run's pcaps/", metavar="OUTDIR")
    add_sample_steps(p, "sampler steps (default: the model config's, 16)", aliases=("--steps",))
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 = none; default: model's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--labels", nargs="+", metavar="LABEL", help="only these classes")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--timing", choices=("generated", "empirical"), default="generated",
                   help="packet times from the model (default) or sampled from each class's training gaps")
    p.add_argument("--weights", metavar="PATH_OR_URI",
                   help="sd15: base weights to use instead of those the model folder names (same model elsewhere)")
    p.add_argument("--controlnet", metavar="PATH_OR_URI", help="sd15: ControlNet weights, likewise")
    p.add_argument("--compile", choices=("auto", "on", "off"),
                   help="native: sample through torch.compile (default: the model's generate.compile; auto: on GPUs)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="native: change a sampling or decoding setting for this run only, e.g. model.tcp_state=off "
                        "(repeatable; the model folder is not changed; netdiff_lib.config.GENERATION_KEYS)")
    p.add_argument("--arrays", action="store_true", help="also write <label>/<label>_<n>.npz trace arrays")
    add_quiet(p, aliases=("--no-progress",))


def run(args: argparse.Namespace) -> int:
    import torch

    from netdiff_lib.cli.train import pretrained
    from netdiff_lib.destination import check_output_dir
    from netdiff_lib.errors import ConfigError
    from netdiff_lib.generate import write_pcaps
    from netdiff_lib.models import Sampling, backend_of, get_backend
    from netdiff_lib.payloads import load_payloads

    if args.per_class < 1:
        raise ConfigError("--per-class must be >= 1")
    if args.sample_steps is not None and args.sample_steps < 1:
        raise ConfigError("--sample-steps must be >= 1")
    check_output_dir(args.out)  # before the model is loaded and sampled
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backend = backend_of(args.model)
    get_backend(backend).check_generation_settings(args.settings)  # before the model is loaded
    model = get_backend(backend).load(args.model, device=device, weights=pretrained(args))
    for notice in model.apply_settings(args.settings) if args.settings else []:
        print(f"netdiff generate: notice: {notice}", file=sys.stderr)
    per_class = {lab: args.per_class for lab in (args.labels or model.labels)}
    sampling = Sampling(steps=args.sample_steps, guidance=args.guidance, timing=args.timing, seed=args.seed,
                        progress=not args.quiet, compile=args.compile)
    t0 = time.perf_counter()
    traces = model.generate(per_class, sampling)
    t1 = time.perf_counter()
    empty: list[str] = []
    paths = write_pcaps(traces, args.out, model.layout, arrays=args.arrays, seed=args.seed,
                        progress=not args.quiet, payloads=load_payloads(args.model),
                        source=f"netdiff-{backend}", empty=empty)
    t2 = time.perf_counter()
    print(f"{len(paths)} pcaps in {args.out} (sampling {t1 - t0:.1f} s, reconstruction {t2 - t1:.1f} s)")
    if empty:
        print(f"{len(empty)} of {len(traces)} generated traces held no packet (every row padding) and were not "
              f"written: {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}")
    return 0
