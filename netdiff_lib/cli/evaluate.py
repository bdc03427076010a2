"""``netdiff evaluate``: fidelity, ML utility, privacy and compliance of synthetic traffic, as a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from netdiff_lib.cli._options import add_out, add_quiet

NAME = "evaluate"
HELP = "compare synthetic with real traffic; write report.json, report.md and report.html"
DESCRIPTION = (
    "Encodes every capture of --real-train, --real-test and --synthetic (folders or object-store prefixes of "
    "labelled pcaps) once, then reports field-distribution distances (JSD, TVD, Hellinger), train-on-synthetic/"
    "test-on-real classifier scores, distances to the closest training trace and validator results, per class "
    "and macro-averaged, beside the same numbers for real-train vs real-test (the floor). Without --synthetic "
    "only the floor is reported."
    " Flow figures (flows per trace, flow sizes and durations, TCP handshakes, nDPI application mix, a flow "
    "classifier) come from nfstream, part of netdiff[eval]."
)
ORDER = 70


def add_arguments(p: argparse.ArgumentParser) -> None:
    from netdiff_lib.evaluate import K_PACKETS, MAX_FILES
    from netdiff_lib.schema import MAX_PACKETS

    p.add_argument("--real-train", required=True, metavar="DIR", help="real captures the generator learned from")
    p.add_argument("--real-test", required=True, metavar="DIR", help="held-out real captures")
    p.add_argument("--synthetic", metavar="DIR", help="generated captures (omit for the real-only floor)")
    add_out(p, "folder for report.json, report.md, report.html", metavar="DIR")
    p.add_argument("--k-packets", type=int, default=K_PACKETS, metavar="K",
                   help=f"first K packets per trace for classifier features and privacy distance ({K_PACKETS})")
    p.add_argument("--max-packets", type=int, default=MAX_PACKETS, metavar="N",
                   help=f"packets encoded per capture ({MAX_PACKETS})")
    p.add_argument("--near-copy", type=float, default=None, metavar="D",
                   help="DCR (share of differing values) at or below which a trace is a near copy "
                        "(default: the 5th percentile of real-test DCRs)")
    p.add_argument("--seed", type=int, default=0, help="classifier seed")
    p.add_argument("--class-map", metavar="FILE", help="class_map.json to read synthetic type-N labels as real labels")
    p.add_argument("--no-compliance", action="store_true", help="skip the protocol validator")
    p.add_argument("--compliance-files", type=int, default=MAX_FILES, metavar="N",
                   help=f"validate at most N pcaps per set, a class-stratified sample (0: all; {MAX_FILES})")
    p.add_argument("--no-plots", action="store_true", help="HTML without pictures (faster)")
    add_quiet(p, "no progress bars or summary table")


def run(args: argparse.Namespace) -> int:
    from netdiff_lib.destination import check_output_dir
    from netdiff_lib.errors import ConfigError
    from netdiff_lib.evaluate import evaluate

    if args.k_packets < 1 or args.max_packets < 1:
        raise ConfigError("--k-packets and --max-packets must be positive")
    check_output_dir(args.out)
    result = evaluate(
        args.real_train, args.real_test, args.synthetic, Path(args.out), k_packets=args.k_packets,
        max_packets=args.max_packets, seed=args.seed,
        near_copy=args.near_copy,
        run_compliance=not args.no_compliance, compliance_files=args.compliance_files or None,
        pictures=not args.no_plots, progress=not args.quiet, class_map=args.class_map,
    )
    if not args.quiet:  # the table of netdiff run's summary; every number is in report.json
        from netdiff_lib.stages.summary import evaluation_lines

        print("\n".join([*evaluation_lines(result["summary"]), f"report      {Path(args.out) / 'report.html'}"]))
    return 0
