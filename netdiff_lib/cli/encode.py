"""``netdiff encode``: captures -> compact array files (and/or nPrint CSV), one per capture."""

from __future__ import annotations

import argparse
from pathlib import Path

from netdiff_lib.atomic import atomic_open
from netdiff_lib.cli._batch import Summary, add_common, finish
from netdiff_lib.cli._traces import FORMATS, open_output_store, run_into_store
from netdiff_lib.inputs import CAPTURE_SUFFIXES, expand, label_of, output_names
from netdiff_lib.nprint.csvio import CsvOptions, write_nprint_csv
from netdiff_lib.nprint.encode import CAPTURE_MODES, encode_pcap
from netdiff_lib.pcap import PcapFile
from netdiff_lib.schema import MAX_PACKETS, NETDIFFUSION, Layout
from netdiff_lib.segment.options import add_trace_arguments, options_from_args
from netdiff_lib.trace import save_trace

NAME = "encode"
HELP = "captures -> nPrint matrices (.npz array files and/or nPrint CSV)"
ORDER = 10


def layout_from_args(args: argparse.Namespace) -> Layout:
    if args.layout == "netdiffusion":
        return NETDIFFUSION
    if args.layout == "full":
        return NETDIFFUSION.full
    blocks = tuple(b for b in args.layout.split(","))
    return Layout(blocks, args.payload)


def add_mode(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=tuple(CAPTURE_MODES), default="netdiff",
                   help="how captures are read: netdiff's corrected parsing (default); nprint, nPrint's quirks; "
                        "netdiffusion, as NetDiffusion's nprint -c 1024 (nPrint's parsing, the first 1,024 frames "
                        "read), for images equal to NetDiffusion's")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, help="capture files or folders")
    add_common(p)
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="output: npz (one array file per trace), csv (nPrint CSV), both, or store (one sharded trace "
                        "store in the output folder, ~20x smaller, read by train and evaluate); default npz with "
                        "--traces file, store otherwise")
    p.add_argument("--layout", default="netdiffusion",
                   help="netdiffusion (1,088 columns, default), full (with addresses) or blocks, e.g. ipv4,tcp,udp")
    p.add_argument("--payload", type=int, default=0, help="payload bytes, with a block list in --layout")
    p.add_argument("--max-packets", type=int, default=MAX_PACKETS, help="rows per trace (default 1024; 0 = all)")
    add_mode(p)
    add_trace_arguments(p)


def count_packets(path: Path) -> int:
    """The packet records of a capture (read, not parsed)."""
    return sum(len(b) for b in PcapFile(path).batches())


def run(args: argparse.Namespace) -> int:
    layout = layout_from_args(args)
    files = expand(args.inputs, CAPTURE_SUFFIXES)
    limit = args.max_packets or None
    opts = options_from_args(args)
    args.format = args.format or ("npz" if opts.whole_files else "store")
    if not opts.whole_files:
        from netdiff_lib.cli._traces import encode_segmented

        return encode_segmented(files, layout, limit, opts, args)
    store = open_output_store(args, layout)
    names = output_names(files)

    def work(path: Path, summary: Summary) -> None:
        mode, count_read = CAPTURE_MODES[args.mode]
        res = encode_pcap(path, layout, max_packets=limit, mode=mode, label=label_of(path), index=0,
                          count_read=count_read)
        summary.skipped += res.skipped
        res.require_packets(path)
        summary.packets += len(res.trace)
        if limit is not None and len(res.trace) >= limit:  # say how many packets the cut left out
            from netdiff_lib.segment.spec import BEYOND

            summary.skipped[BEYOND] += max(count_packets(path) - res.packets_read, 0)
        if store is not None:
            store.add(res.trace)
        name = names[path]
        if args.format in ("npz", "both"):
            save_trace(args.out / f"{name}.npz", res.trace)
        if args.format in ("csv", "both"):
            with atomic_open(args.out / f"{name}.nprint") as fh:
                write_nprint_csv(fh, res.trace, CsvOptions(relative=True))
        summary.outputs.append(name)

    return finish(run_into_store(store, files, work, args))
