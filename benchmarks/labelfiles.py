"""Label files as the public data sets write them, for captures made here: CIC-IDS2017 CSVs and IoT-23 conn.logs.

* :class:`CicWriter`: a CICFlowMeter CSV of CIC-IDS2017's ``TrafficLabelling`` kind, with its quirks: column
  names with a leading space, CRLF line ends, times in the lab's Atlantic Daylight Time (UTC-3) in two forms
  (``3/7/2017 1:15``: minutes, a 12-hour clock without AM/PM; ``03/07/2017 01:15:58 PM``), the benign class
  written ``BENIGN``, and the blank ``,,,,`` rows the 2017 files end with;
* :class:`ZeekWriter`: a Zeek ``conn.log.labeled`` of IoT-23's kind: ``#`` header lines, tab-separated fields but
  the last three (``tunnel_parents label detailed-label``) separated by three spaces, ``Benign`` or ``Malicious``
  with the class as the detailed label.

Both take one flow at a time (:class:`FlowRow`) and write as they go. The tests' label files use the same pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType

NS = 1_000_000_000
ADT = timezone(timedelta(hours=-3))  # CIC-IDS2017's lab clock in July 2017
CIC17_HEADER = ("Flow ID, Source IP, Source Port, Destination IP, Destination Port, Protocol, Timestamp, "
                "Flow Duration, Total Fwd Packets, Label")
CIC17_COLUMNS = ("Flow ID, Source IP, Source Port, Destination IP, Destination Port, Protocol, Timestamp, "
                 "Flow Duration, Total Fwd Packets, Total Backward Packets,Total Length of Fwd Packets, "
                 "Total Length of Bwd Packets, Flow Bytes/s, Flow Packets/s, Label")
ZEEK_FIELDS = ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "duration",
               "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp", "missed_bytes", "history",
               "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes")
ZEEK_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}


def cic17_time(ts: int, style: str) -> str:
    """A CIC-IDS2017 timestamp of ``ts`` ns: ``minutes`` (``3/7/2017 1:15``) or ``seconds`` (``03/07/2017
    01:15:58 PM``), in the lab's local time."""
    local = datetime.fromtimestamp(ts // NS, ADT)
    if style == "minutes":  # 12-hour clock, no AM/PM, no seconds
        return f"{local.day}/{local.month}/{local.year} {local.hour % 12 or 12}:{local.minute:02d}"
    return local.strftime("%d/%m/%Y %I:%M:%S %p")


def zeek_head(opened: str = "2019-01-10-13-42-21") -> list[str]:
    """The ``#`` lines of an IoT-23 ``conn.log.labeled`` (the last three names separated by three spaces)."""
    return ["#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-", "#path\tconn",
            f"#open\t{opened}", "#fields\t" + "\t".join(ZEEK_FIELDS) + "\ttunnel_parents   label   detailed-label",
            "#types\t" + "\t".join(["string"] * 20) + "\tset[string]   string   string"]


def _seconds(ns: int, up: bool = False) -> str:
    """Seconds with six decimals, exact (rounded down, or up)."""
    us = -(-ns // 1000) if up else ns // 1000
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


@dataclass
class FlowRow:
    """One flow: originator first, times in ns, packets and bytes per direction."""

    proto: int
    src: str
    sport: int
    dst: str
    dport: int
    first: int
    last: int
    packets: tuple[int, int]
    octets: tuple[int, int]
    label: str


class _Writer:
    def __init__(self, path: Path) -> None:
        self.path, self.rows = Path(path), 0
        self.tmp = self.path.with_name(f".{self.path.name}.part")
        self.fh = open(self.tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed by close()/__exit__

    def close(self) -> None:
        self.fh.close()
        self.tmp.replace(self.path)

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.fh.close()
            self.tmp.unlink(missing_ok=True)


class CicWriter(_Writer):
    """A CIC-IDS2017 ``TrafficLabelling`` CSV; ``benign``: the class written ``BENIGN``; rows alternate between
    the two timestamp forms in runs of ``run`` rows."""

    def __init__(self, path: Path, benign: str | None = None, run: int = 1000) -> None:
        super().__init__(path)
        self.benign, self.run = benign, run
        self.fh.write(CIC17_COLUMNS + "\r\n")

    def write(self, f: FlowRow) -> None:
        style = "seconds" if (self.rows // self.run) % 3 == 2 else "minutes"
        dur_us = -(-(f.last - f.first) // 1000)
        secs = max(dur_us, 1) / 1e6
        label = "BENIGN" if f.label == self.benign else f.label
        self.fh.write(f"{f.src}-{f.dst}-{f.sport}-{f.dport}-{f.proto},{f.src},{f.sport},{f.dst},{f.dport},{f.proto},"
                      f"{cic17_time(f.first, style)},{dur_us},{f.packets[0]},{f.packets[1]},{f.octets[0]},"
                      f"{f.octets[1]},{sum(f.octets) / secs:.6g},{sum(f.packets) / secs:.6g},{label}\r\n")
        self.rows += 1

    def close(self) -> None:
        self.fh.write(",,,,,,,,,,,,,,\r\n" * 3)  # the blank rows 2017's files end with
        super().close()


class ZeekWriter(_Writer):
    """An IoT-23 ``conn.log.labeled``; ``benign``: the class labelled ``Benign`` (the others ``Malicious`` with
    the class as detailed label)."""

    def __init__(self, path: Path, benign: str | None = None) -> None:
        super().__init__(path)
        self.benign = benign
        self.fh.write("\n".join(zeek_head()) + "\n")

    def write(self, f: FlowRow) -> None:
        uid = f"C{self.rows:017x}"
        label, detailed = ("Benign", "-") if f.label == self.benign else ("Malicious", f.label)
        cells = [_seconds(f.first), uid, f.src, str(f.sport), f.dst, str(f.dport), ZEEK_NAMES[f.proto],
                 "-", _seconds(f.last - f.first, up=True), str(f.octets[0]), str(f.octets[1]), "OTH", "-",
                 "-", "0", "-", str(f.packets[0]), str(f.octets[0]), str(f.packets[1]), str(f.octets[1])]
        self.fh.write("\t".join(cells) + f"\t(empty)   {label}   {detailed}\n")
        self.rows += 1

    def close(self) -> None:
        self.fh.write("#close\t2019-01-10-13-50-00\n")
        super().close()
