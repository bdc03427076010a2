"""Measure which filler bytes tshark accepts on which port: the source of ``ports.json``.

A payload on a port that some dissector claims (MySQL on 3306, RIP on 520, ...) is judged by that dissector,
so "bytes that no dissector flags" depends on the port.  This tool asks tshark (every dissector on, checksums
on): for every UDP and TCP port it sends each candidate filler (:data:`FILLERS`) at several lengths, TCP as a
short conversation both ways (so that dissectors that reassemble see several segments), and keeps per port the
filler and the range of lengths in which no packet is malformed, has an expert error or a bad checksum (the
run of passing lengths that reaches furthest up; ties: the earlier filler).  Ports where zeros pass at every
length need no entry; ports where nothing passes are ``null`` (reconstruction sends no payload there).

    python3 -m netdiff_lib.payloads.scan [--out netdiff_lib/payloads/ports.json] [--ports 1-65535]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from netdiff_lib.atomic import write_json
from netdiff_lib.payloads import wire
from netdiff_lib.pcap import PcapWriter
from netdiff_lib.validate import line_failures, tshark_command

#: Candidate fillers in order of preference.
FILLERS = ("zero", "text", "ff", "mixed")
#: Lengths every filler is tried at (short ones catch fixed-size headers, long ones length fields).
LENGTHS = (*range(1, 17), 20, 24, 28, 32, 40, 48, 56, 64, 100, 200, 300, 512, 1000, 1460)
QUICK_LENGTHS = (1, 8, 100)
#: The other end of every scanned conversation (no dissector registers it).
OTHER_PORT = 61000
TABLE = Path(__file__).with_name("ports.json")


def filler(kind: str, n: int) -> bytes:
    """``n`` bytes of a filler kind (see :data:`FILLERS`)."""
    if kind == "zero":
        return bytes(n)
    if kind == "ff":
        return b"\xff" * n
    if kind == "text":
        return (b"x" * n)[:n]
    if kind == "mixed":
        return (hashlib.sha256(b"netdiff").digest() * (n // 32 + 1))[:n]
    raise ValueError(f"unknown filler {kind!r}")


def _frames(l4: str, port: int, kind: str, length: int, conv: int) -> list[bytes]:
    body = filler(kind, length)
    if l4 == "udp":
        return [wire.udp_frame(OTHER_PORT, port, body), wire.udp_frame(port, OTHER_PORT, body)]
    src = 1024 + conv % 60000  # one conversation per case: segments of different cases never reassemble
    seq_c, seq_s = 1000, 5000
    out = []
    for _ in range(2):
        out.append(wire.tcp_frame(src, port, body, seq_c, seq_s))
        seq_c += length
    for _ in range(2):
        out.append(wire.tcp_frame(port, src, body, seq_s, seq_c))
        seq_s += length
    return out


def run_cases(cases: list[tuple[str, int, str, int]]) -> set[int]:
    """Indices of the cases (transport, port, filler, length) in which tshark flags any packet."""
    owner: list[int] = []
    with tempfile.TemporaryDirectory(prefix="netdiff-scan-") as tmp:
        path = Path(tmp) / "scan.pcap"
        with PcapWriter(path) as w:
            for i, (l4, port, kind, length) in enumerate(cases):
                for f in _frames(l4, port, kind, length, i):
                    w.write(f, (1_700_000_000 + len(owner)) * 10**9)
                    owner.append(i)
        proc = subprocess.run(tshark_command(path, "full"), capture_output=True, text=True, check=True)
    bad = set()
    for line in proc.stdout.splitlines():
        cols = line.split("\t")
        if cols[0].strip() and line_failures(cols):
            bad.add(owner[int(cols[0]) - 1])
    return bad


def failures(l4: str, ports: Iterable[int], kind: str, lengths: Iterable[int]) -> set[tuple[int, int]]:
    """(port, length) pairs at which ``kind`` fails."""
    cases = [(l4, p, kind, n) for p in ports for n in lengths]
    bad: set[tuple[int, int]] = set()
    for start in range(0, len(cases), 50_000):
        chunk = cases[start:start + 50_000]
        bad |= {(chunk[i][1], chunk[i][3]) for i in run_cases(chunk)}
    return bad


def best_run(passing: list[bool]) -> tuple[int, int] | None:
    """(first, last) index of the run of passing lengths that reaches furthest up (then the longest)."""
    runs, start = [], None
    for i, ok in enumerate([*passing, False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            runs.append((start, i - 1))
            start = None
    return max(runs, key=lambda r: (r[1], r[1] - r[0])) if runs else None


def scan(ports: list[int], registered: dict[str, set[int]]) -> dict[str, dict[str, list | None]]:
    """{transport: {port: [filler, min length, max length] or None}} for the ports where zeros do not pass at
    every length; the maximum is ``None`` when the run reaches the longest length tried."""
    table: dict[str, dict[str, list | None]] = {}
    for l4 in ("udp", "tcp"):
        quick = {p for p, _ in failures(l4, ports, "zero", QUICK_LENGTHS)}
        todo = sorted(quick | (registered.get(l4, set()) & set(ports)))
        choice: dict[str, list | None] = {}
        bad = {kind: failures(l4, todo, kind, LENGTHS) for kind in FILLERS}
        for p in todo:
            runs = {k: best_run([(p, n) not in bad[k] for n in LENGTHS]) for k in FILLERS}
            good = [(k, r) for k, r in runs.items() if r is not None]
            if not good:
                choice[str(p)] = None
                continue
            kind, (lo, hi) = max(good, key=lambda kr: (kr[1][1], kr[1][1] - kr[1][0]))
            if kind == "zero" and (lo, hi) == (0, len(LENGTHS) - 1):
                continue
            choice[str(p)] = [kind, LENGTHS[lo], None if hi == len(LENGTHS) - 1 else LENGTHS[hi]]
        table[l4] = choice
    return table


def registered_ports() -> dict[str, set[int]]:
    """Ports that tshark's UDP and TCP port tables name (``tshark -G decodes``)."""
    text = subprocess.run(["tshark", "-G", "decodes"], capture_output=True, text=True, check=True).stdout
    out: dict[str, set[int]] = {"udp": set(), "tcp": set()}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0] in ("udp.port", "tcp.port") and parts[1].isdigit():
            out[parts[0].split(".")[0]].add(int(parts[1]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=TABLE, help="where to write the table (default: ports.json)")
    p.add_argument("--ports", default="1-65535", help="port range to scan, LO-HI")
    args = p.parse_args(argv)
    lo, hi = (int(x) for x in args.ports.split("-"))
    version = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    registered = registered_ports()
    table = scan(list(range(lo, hi + 1)), registered)
    write_json(args.out, {"format": "netdiff-payload-ports/1", "tshark": version, "fillers": list(FILLERS),
                          "lengths": list(LENGTHS), **table,
                          "registered": {l4: sorted(ports) for l4, ports in registered.items()}})
    print({k: len(v) for k, v in table.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
