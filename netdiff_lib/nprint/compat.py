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

import numpy as np

from netdiff_lib.atomic import atomic_open
from netdiff_lib.errors import ConfigError
from netdiff_lib.nprint.csvio import CsvOptions, header_line, ip_text, join_prefix, timestamp_prefix, write_rows
from netdiff_lib.nprint.decode import write_trace_pcap
from netdiff_lib.nprint.encode import EncodedBatch, _windows, iter_encoded, skip_counts
from netdiff_lib.nprint.locate import PROTO_TCP, PROTO_UDP
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


def _addresses(enc: EncodedBatch, which: str) -> list[str]:
    loc, k, d = enc.loc, enc.keep, enc.batch.data
    l3, v6 = loc.l3[k], loc.version[k] == 6
    off4, off6 = (12, 8) if which == "src" else (16, 24)
    w4 = _windows(d, l3 + off4, 4)
    w6 = _windows(d, l3 + off6, 16)
    return [ip_text(bytes(b6) if six else bytes(b4)) for b4, b6, six in zip(w4, w6, v6.tolist(), strict=True)]


def _ports(enc: EncodedBatch, at: int) -> list[str]:
    loc, k, d = enc.loc, enc.keep, enc.batch.data
    has = np.isin(loc.proto[k], (PROTO_TCP, PROTO_UDP))
    w = _windows(d, np.where(has, loc.l4[k] + at, 0), 2).astype(np.int64)
    port = (w[:, 0] << 8) | w[:, 1]
    return [str(p) if h else "NULL" for p, h in zip(port.tolist(), has.tolist(), strict=True)]


def index_values(enc: EncodedBatch, index: int) -> list[str]:
    """The ``-O`` index column of every kept packet."""
    if index in (0, 1):
        return _addresses(enc, "src" if index == 0 else "dst")
    if index in (2, 3):
        return _ports(enc, 0 if index == 2 else 2)
    if index == 4:
        proto = enc.loc.proto[enc.keep]
        names = np.where(proto == PROTO_TCP, "TCP", np.where(proto == PROTO_UDP, "UDP", "NULL")).tolist()
        parts = zip(_addresses(enc, "src"), _addresses(enc, "dst"), _ports(enc, 0), _ports(enc, 2), names, strict=True)
        return ["_".join(p) for p in parts]
    raise ConfigError(f"-O {index} is not supported (0-4: src_ip, dst_ip, src_prt, dst_prt, flow)")


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
        write_rows(out, prefix, enc.matrix)
    return skipped


def run_job(job: NprintJob, stdout: IO[bytes] | None = None) -> int:
    """Run a drop-in job; returns nPrint's exit status."""
    if job.nprint_in:
        from netdiff_lib.nprint.csvio import read_nprint_csv

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
