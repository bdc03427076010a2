"""Where the drop-in's packets come from: a capture file (``-P``, through an optional BPF filter ``-f``), a CSV
of hex packets (``-C``) or a live device (``-d``, or libpcap's first device when no input is given).

Each source yields ``(batch, prefixes)``: a :class:`PacketBatch` and, for ``-C`` only, the input columns that
nPrint copies in front of each row.
"""

from __future__ import annotations

from collections.abc import Iterator

from netdiff_lib.errors import InputError, os_cause
from netdiff_lib.pcap import PacketBatch, PcapFile

HEX_COLUMN = 2  # nPrint reads the hex packet from the third column of a -C file
CSV_BATCH = 4096


def pcap_source(path: str, expr: str | None, batch_size: int = 16384,
                libpcap_time: bool = True) -> Iterator[tuple[PacketBatch, None]]:
    """A capture file's packets, only those the BPF filter ``expr`` accepts when given; timestamps as libpcap
    gives them to nPrint unless ``libpcap_time`` is False (see :class:`PcapFile`)."""
    if not expr:
        for batch in PcapFile(path, libpcap_time=libpcap_time).batches(batch_size=batch_size):
            yield batch, None
        return
    from netdiff_lib.nprint.libpcap import BpfFilter, take  # libpcap (ctypes) only for a filter

    bpf = BpfFilter(expr)
    bpf.program(1)  # a bad expression fails before any output, as in nPrint
    for batch in PcapFile(path, libpcap_time=libpcap_time).batches(batch_size=batch_size):
        yield take(batch, bpf.matches(batch).nonzero()[0]), None


def live_source(device: str | None, expr: str | None) -> Iterator[tuple[PacketBatch, None]]:
    from netdiff_lib.nprint.libpcap import live_batches

    for batch in live_batches(device, expr):
        yield batch, None


class CsvSource:
    """Packets of a ``-C`` file, opened once (it may be a pipe): its first line names the input columns, which
    nPrint writes first in its header; then one packet per line, hex in the third column (link type unset,
    so nPrint's Ethernet heuristic applies).  A line whose hex does not parse is skipped with nPrint's message,
    appended to ``notes``."""

    def __init__(self, path: str, notes: list[str]) -> None:
        self.path, self.notes = path, notes
        try:
            self._fh = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed by __iter__
            self.columns = self._fh.readline().rstrip("\r\n").split(",")
        except OSError as exc:
            raise InputError(path, os_cause(exc, "cannot read")) from None

    def __iter__(self) -> Iterator[tuple[PacketBatch, list[list[str]]]]:
        width, notes = len(self.columns), self.notes
        pkts: list[bytes] = []
        prefixes: list[list[str]] = []
        with self._fh as fh:
            for line in fh:
                line = line.rstrip("\r\n")
                tokens = line.split(",")
                pkt = _hex_packet(tokens[HEX_COLUMN]) if len(tokens) > HEX_COLUMN else None
                if pkt is None:
                    if pkts:  # the rows before this line are written before nPrint's message
                        yield _hex_batch(pkts), prefixes
                        pkts, prefixes = [], []
                    notes.append(f"Error parsing line: {line}, skipping\n")
                    continue
                pkts.append(pkt)
                prefixes.append((tokens + [""] * width)[:width])
                if len(pkts) == CSV_BATCH:
                    yield _hex_batch(pkts), prefixes
                    pkts, prefixes = [], []
        if pkts:
            yield _hex_batch(pkts), prefixes


def _hex_packet(cell: str) -> bytes | None:
    try:
        return bytes.fromhex(cell) if len(cell) % 2 == 0 and " " not in cell else None
    except ValueError:
        return None


def _hex_batch(pkts: list[bytes]) -> PacketBatch:
    from netdiff_lib.nprint.libpcap import make_batch

    return make_batch(pkts, [0] * len(pkts), [len(p) for p in pkts], 0)
