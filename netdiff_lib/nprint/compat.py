"""``netdiff nprint``: a drop-in for the nPrint 1.2.1 binary (``nprint -P FILE -4 -t ... [-W FILE]``).

It writes the same bytes to the same place as the reference tool (stdout unless ``-W``), quirks included
(``mode="nprint"``); ``--netdiff`` switches to the library's corrected parsing (see
``docs/nprint-differences.md``).  ``-N FILE -W OUT`` turns nPrint CSV back into a pcap with timestamps 0,
as nPrint does, but with zero payload instead of uninitialised memory.

nPrint's row rules, reproduced here: ``-c N`` stops once N packets were read (those a ``-f`` filter drops
never count; unparseable ones do); with ``-I FILE`` only packets whose source address is listed are written,
at most N per address, and ``-c`` no longer stops the run; a ``-C`` hex-CSV input stops at its first
unparseable packet and carries its own columns instead of the index and timestamps; ``-x REGEX`` drops every
bit column whose whole name matches.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.nprint.csvio import (
    CsvOptions,
    join_prefix,
    read_nprint_csv,
    timestamp_prefix,
    write_rows,
)
from netdiff_lib.nprint.encode import EncodedBatch, encode_batch, skip_counts
from netdiff_lib.nprint.index import index_values
from netdiff_lib.nprint.locate import KEPT
from netdiff_lib.pcap import PacketBatch, PcapWriter
from netdiff_lib.schema import Layout

NPRINT_SNAPLEN = 65535  # -N: nPrint's pcap_open_dead(..., 65535)


@dataclass
class NprintJob:
    """One invocation of the drop-in, as parsed from nPrint's flags."""

    pcap: str | None = None
    nprint_in: str | None = None
    csv_in: str | None = None
    out: str | None = None
    blocks: tuple[str, ...] = ()
    payload: int = 0
    count: int | None = None
    fill: int = -1
    csv: CsvOptions = field(default_factory=CsvOptions)
    mode: str = "nprint"
    stats: bool = False
    verbose: bool = False
    bpf: str | None = None
    device: str | None = None
    regex: str | None = None
    ip_file: str | None = None

    def layout(self) -> Layout:
        return Layout(self.blocks, self.payload)

    def columns(self) -> np.ndarray | None:
        """Indices of the bit columns ``-x`` keeps (None: all)."""
        if self.regex is None:
            return None
        try:
            pattern = re.compile(self.regex)
        except re.error as exc:
            raise ConfigError(f"-x {self.regex!r} is not a valid regular expression ({exc})") from None
        names = self.layout().columns
        return np.array([i for i, c in enumerate(names) if not pattern.fullmatch(c)], dtype=np.intp)


def _sources(job: NprintJob, notes: list[str]) -> Iterable[tuple[PacketBatch, list[list[str]] | None]]:
    """The job's packets; each input is opened once (a ``-C`` file here, to read its header line)."""
    from netdiff_lib.nprint import sources

    if job.csv_in:
        return sources.CsvSource(job.csv_in, notes)
    if job.pcap:
        return sources.pcap_source(job.pcap, job.bpf, libpcap_time=job.mode == "nprint")
    return sources.live_source(job.device, job.bpf)


def _subset(enc: EncodedBatch, rows: np.ndarray) -> EncodedBatch:
    raw = None if enc.raw is None else enc.raw[rows]
    fill = None if enc.raw_fill is None else enc.raw_fill[rows]
    return EncodedBatch(enc.matrix[rows], enc.keep[rows], enc.loc, enc.batch, raw, fill)


class _IpMap:
    """``-I``: the listed source addresses and how many packets each has had written."""

    def __init__(self, path: str, limit: int | None) -> None:
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError as exc:
            raise InputError(path, f"cannot read ({exc.strerror})") from None
        self.seen = {ln.split(",")[0]: 0 for ln in lines if ln.split(",")[0]}
        self.limit = limit

    def select(self, enc: EncodedBatch) -> np.ndarray:
        keep = []
        for i, ip in enumerate(index_values(enc, 0)):
            if ip in self.seen:
                if not self.limit or self.seen[ip] < self.limit:
                    keep.append(i)
                self.seen[ip] += 1
        return np.array(keep, dtype=np.intp)


def _prefixes(job: NprintJob, enc: EncodedBatch, given: list[list[str]] | None, prev_us: int) -> list[str]:
    if given is not None:
        return [",".join(given[i]) for i in enc.keep.tolist()]
    ts = enc.batch.ts_ns[enc.keep]
    return join_prefix(index_values(enc, job.csv.index), timestamp_prefix(ts, job.csv, prev_us, job.mode == "nprint"))


def _header(job: NprintJob, cols: np.ndarray | None, csv_columns: list[str] | None) -> bytes:
    names = job.layout().columns
    if cols is not None:
        names = [names[i] for i in cols]
    prefix = csv_columns if csv_columns is not None else job.csv.header_prefix()
    return (",".join(prefix + names) + "\n").encode()


def _limit(batch: PacketBatch, left: int | None) -> PacketBatch:
    if left is None or len(batch) <= left:
        return batch
    from netdiff_lib.nprint.libpcap import take

    return take(batch, np.arange(left))


def _stop_at_unparseable(enc: EncodedBatch) -> tuple[EncodedBatch, bool]:
    """``-C`` input: nPrint returns at the first packet it cannot parse."""
    bad = np.flatnonzero(enc.loc.reason != KEPT)
    if not len(bad):
        return enc, False
    return _subset(enc, np.flatnonzero(enc.keep < bad[0])), True


def write_csv(job: NprintJob, out: IO[bytes]) -> Counter:
    """Encode the job's input and write nPrint CSV to ``out``; returns skip counts by reason.

    nPrint's own messages on stdout ("ip map loaded", lines of a ``-C`` file it cannot parse) go into ``out``
    when that is stdout, in the place nPrint prints them.
    """
    layout, cols = job.layout(), job.columns()
    messages = sys.stdout.buffer if job.out else out
    prev_us, skipped, notes = 0, Counter(), []
    source = _sources(job, notes)
    out.write(_header(job, cols, getattr(source, "columns", None)))
    ip_map = _IpMap(job.ip_file, job.count) if job.ip_file else None
    if ip_map is not None:
        messages.write(b"ip map loaded\n")
    left = job.count if job.count and ip_map is None else None
    for batch, given in source:
        batch = _limit(batch, left)
        left = None if left is None else left - len(batch)
        enc = encode_batch(batch, layout, job.mode, job.fill)
        skipped += skip_counts(enc)
        stop = False
        if job.csv_in:
            enc, stop = _stop_at_unparseable(enc)
        if ip_map is not None:
            enc = _subset(enc, ip_map.select(enc))
        if job.verbose:
            from netdiff_lib.nprint.verbose import describe

            sys.stderr.write("".join(describe(enc, r) for r in range(len(enc.keep))))
        messages.write("".join(notes).encode())
        notes.clear()
        if len(enc.keep):
            prefix = _prefixes(job, enc, given, prev_us)
            prev_us = int(enc.batch.ts_ns[enc.keep[-1]] // 1000)
            if cols is None:
                write_rows(out, prefix, enc.matrix, job.fill, enc.raw, enc.raw_fill)
            else:
                write_rows(out, prefix, np.ascontiguousarray(enc.matrix[:, cols]), job.fill)
        if stop or left == 0:
            break
    return skipped


def nprint_to_pcap(csv: str, out: str) -> None:
    """``-N CSV -W OUT``: nPrint's reverse conversion.  As nPrint, a row whose first IP byte is not version 4
    or 6 gives no packet, each IPv6 packet prints ``v6`` on stdout, timestamps are 0 and the snap length is
    65,535; bytes the CSV does not carry are zero (nPrint: uninitialised memory)."""
    from netdiff_lib.nprint.decode import ip_versions, pack_matrix

    trace = read_nprint_csv(csv)
    packed = pack_matrix(trace.matrix, trace.layout)
    versions = ip_versions(packed)
    keep = np.flatnonzero((versions == 4) | (versions == 6)).tolist()
    packets = packed.packets()
    sys.stdout.write("v6\n" * int((versions == 6).sum()))
    sys.stdout.flush()
    with PcapWriter(out, linktype=packed.linktype, snaplen=NPRINT_SNAPLEN) as w:
        w.write_many([packets[i] for i in keep], np.zeros(len(keep), np.int64))


def run_job(job: NprintJob, stdout: IO[bytes] | None = None) -> int:
    """Run a drop-in job; returns nPrint's exit status."""
    if sum(map(bool, (job.pcap, job.csv_in, job.nprint_in))) > 1:
        print("Only one of {pcap, csv, nprint} input files can be selected", file=sys.stderr)
        return 1
    if job.nprint_in:
        if not job.out:
            print("nprint infile option requires outfile for writing reversed pcap", file=sys.stderr)
            return 1
        nprint_to_pcap(job.nprint_in, job.out)
        return 0
    with ExitStack() as stack:
        if job.out:
            from netdiff_lib.atomic import atomic_open

            Path(job.out).parent.mkdir(parents=True, exist_ok=True)
            fh = stack.enter_context(atomic_open(job.out, "wb"))
        else:
            fh = stdout or sys.stdout.buffer
        skipped = write_csv(job, fh)
    if job.stats:
        print(f"skipped: {sum(skipped.values())} {dict(skipped)}", file=sys.stderr)
    return 0
