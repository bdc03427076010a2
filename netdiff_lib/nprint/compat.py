"""``netdiff nprint``: a drop-in for the nPrint 1.2.1 binary (``nprint -P FILE -4 -t ... [-W FILE]``).

It writes the same bytes to the same place as the reference tool (stdout unless ``-W``), quirks included
(``mode="nprint"``); ``--netdiff`` switches to the library's corrected parsing (see
``docs/nprint-differences.md``).  ``-N FILE -W OUT`` turns nPrint CSV back into a pcap with timestamps 0,
as nPrint does, but with zero payload instead of uninitialised memory.
"""

from __future__ import annotations

import sys
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from netdiff_lib.atomic import atomic_open
from netdiff_lib.errors import ConfigError
from netdiff_lib.nprint.csvio import (
    CsvOptions,
    header_line,
    join_prefix,
    read_nprint_csv,
    timestamp_prefix,
    write_rows,
)
from netdiff_lib.nprint.decode import write_trace_pcap
from netdiff_lib.nprint.encode import iter_encoded, skip_counts
from netdiff_lib.nprint.index import index_values
from netdiff_lib.schema import Layout


@dataclass
class NprintJob:
    """One invocation of the drop-in, as parsed from nPrint's flags."""

    pcap: str | None = None
    nprint_in: str | None = None
    out: str | None = None
    blocks: tuple[str, ...] = ()
    payload: int = 0
    count: int | None = None
    fill: int = -1
    csv: CsvOptions = field(default_factory=CsvOptions)
    mode: str = "nprint"
    stats: bool = False

    def layout(self) -> Layout:
        return Layout(self.blocks, self.payload)


def write_csv(job: NprintJob, out: IO[bytes]) -> Counter:
    """Encode ``job.pcap`` and write nPrint CSV to ``out``; returns skip counts by reason."""
    layout = job.layout()
    out.write(header_line(layout, job.csv))
    prev_us, skipped = 0, Counter()
    count_read = job.mode == "nprint"
    for enc in iter_encoded(job.pcap, layout, job.mode, job.fill, max_packets=job.count, count_read=count_read):
        skipped += skip_counts(enc)
        if not len(enc.keep):
            continue
        ts = enc.batch.ts_ns[enc.keep]
        prefix = join_prefix(index_values(enc, job.csv.index), timestamp_prefix(ts, job.csv, prev_us))
        prev_us = int(ts[-1] // 1000)
        write_rows(out, prefix, enc.matrix, job.fill, enc.raw, enc.raw_fill)
    return skipped


def run_job(job: NprintJob, stdout: IO[bytes] | None = None) -> int:
    """Run a drop-in job; returns nPrint's exit status."""
    if job.nprint_in:
        if not job.out:
            raise ConfigError("-N needs -W OUT.pcap")
        trace = read_nprint_csv(job.nprint_in)
        write_trace_pcap(job.out, trace, zero_timestamps=True)
        return 0
    if not job.pcap:
        raise ConfigError("live capture is not supported: give -P FILE (or -N FILE -W OUT)")
    with ExitStack() as stack:
        if job.out:
            Path(job.out).parent.mkdir(parents=True, exist_ok=True)
            fh = stack.enter_context(atomic_open(job.out, "wb"))
        else:
            fh = stdout or sys.stdout.buffer
        skipped = write_csv(job, fh)
    if job.stats:
        print(f"skipped: {sum(skipped.values())} {dict(skipped)}", file=sys.stderr)
    return 0
