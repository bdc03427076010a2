"""``netdiff encode --traces MODE`` / ``--labels FILE``: each capture cut into traces, all of them into one trace
store in ``OUT`` (``--format store``, the default here) or each trace a file ``OUT/<label>/<capture>_<n>.npz``
(and/or ``.nprint``), and a summary of traces per class and of the packets left out, by reason."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from netdiff_lib.atomic import atomic_open
from netdiff_lib.cli._batch import Summary, finish, run_files
from netdiff_lib.destination import check_output_dir
from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.inputs import label_of, output_names
from netdiff_lib.nprint.encode import CAPTURE_MODES
from netdiff_lib.schema import Layout
from netdiff_lib.segment.capture import segment_capture
from netdiff_lib.segment.options import TraceOptions
from netdiff_lib.segment.spec import SegmentStats, safe_name
from netdiff_lib.store import StoreWriter
from netdiff_lib.store.codec import PackedTraces
from netdiff_lib.trace import Trace, save_trace

#: ``netdiff encode --format`` values (the default: npz with ``--traces file``, store otherwise).
FORMATS = ("npz", "csv", "both", "store")


def open_output_store(args: argparse.Namespace, layout: Layout) -> StoreWriter | None:
    """The trace store that ``--format store`` writes into ``--out`` (None for the other formats)."""
    if args.format != "store":
        return None
    check_output_dir(args.out)
    return StoreWriter(args.out, layout, meta={"written_by": "netdiff encode"})


def run_into_store(store: StoreWriter | None, files: list[Path], work: Callable[[Path, Summary], None],
                   args: argparse.Namespace) -> Summary:
    """:func:`run_files`, then the store (when writing one) closed; on an error nothing of the store stays."""
    if store is None:
        return run_files(files, work, args, "encode")
    try:
        summary = run_files(files, work, args, "encode")
    except BaseException:
        store.abort()
        raise
    doc = store.close()
    print(f"trace store: {args.out} ({doc['traces']:,} traces, {doc['packets']:,} packets, "
          f"{sum(s['bytes'] for s in doc['shards']):,} bytes in {len(doc['shards'])} shard(s))", file=sys.stderr)
    return summary


def check_mode(mode: str, opts: TraceOptions) -> tuple[str, bool]:
    parse, count_read = CAPTURE_MODES[mode]
    if count_read and not opts.whole_files:
        raise ConfigError("--mode netdiffusion reads the first frames of each file: use it with --traces file and "
                          "no --labels")
    return parse, count_read


def write_trace(out: Path, name: str, trace: Trace, fmt: str) -> None:
    from netdiff_lib.nprint.csvio import CsvOptions, write_nprint_csv

    if fmt in ("npz", "both"):
        save_trace(out / f"{name}.npz", trace)
    if fmt in ("csv", "both"):
        path = out / f"{name}.nprint"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as fh:
            write_nprint_csv(fh, trace, CsvOptions(relative=True))


def encode_segmented(files: list[Path], layout: Layout, limit: int | None, opts: TraceOptions,
                     args: argparse.Namespace) -> int:
    parse, _ = check_mode(args.mode, opts)
    index = opts.index()  # a bad label file fails before any capture is read
    if index is not None:
        print(f"labels: {index.describe()}", file=sys.stderr)
    total = SegmentStats()
    store = open_output_store(args, layout)
    names = output_names(files)

    def work(path: Path, summary: Summary) -> None:
        stats, n = SegmentStats(), 0
        for trace in segment_capture(path, opts.spec, layout, max_packets=limit, label=label_of(path),
                                     labels=index, unlabelled=opts.unlabelled, mode=parse, stats=stats,
                                     index=0 if args.format in ("csv", "both") else None,
                                     packed=store is not None, batched=store is not None):
            if store is not None:  # a batch's traces at once (PackedTraces), or one trace
                store.add(trace)
                n += len(trace) if isinstance(trace, PackedTraces) else 1
                continue
            n += 1
            name = f"{safe_name(trace.label)}/{names[path]}_{n:05d}"
            write_trace(args.out, name, trace, args.format)
            summary.outputs.append(name)
        total.update(stats)
        summary.packets += stats.in_traces
        summary.skipped += stats.dropped
        if not n:
            reasons = ", ".join(f"{k}: {v}" for k, v in stats.dropped.items()) or "the capture holds no packets"
            raise InputError(path, f"no trace ({stats.packets} packets read; {reasons})")

    summary = run_into_store(store, files, work, args)
    for line in total.lines()[: len(total.traces) + 1]:
        print(line, file=sys.stderr)
    return finish(summary)
