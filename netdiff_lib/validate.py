"""Protocol validation of pcaps: tshark with checksum validation when installed, a built-in validator otherwise.

Per file and packet three things count as failures:

- **malformed**: Wireshark's ``_ws.malformed`` (a dissector hit the end of the data or an impossible value); the
  built-in validator: a header that does not fit the packet, or length fields that disagree with it.
- **expert errors**: expert infos of severity *error* in any group, plus severity *warning* in the groups that
  judge a header itself (Checksum, Malformed, Protocol: e.g. "Window scale shift exceeds 14", "4 NOP in a row",
  "non-SYN packet contains MSS").  Warnings of the Sequence group are **not** counted: TCP analysis ("previous
  segment not captured", "ACKed segment that wasn't captured", retransmissions, zero window, RST) and "no
  response seen to ICMP request" describe how complete a capture is and how a conversation behaved, not
  whether its packets are valid; notes and chats never count.
- **bad checksums**: IPv4 header, TCP, UDP (0 = none is allowed over IPv4), ICMP and ICMPv6.

Scope (tshark): ``headers`` decodes transport payloads as raw data (``-d tcp.port==0-65535,data`` and the same
for UDP), so only headers are judged; ``full`` lets every dissector run; ``layers`` (the default) runs both and
reports the two apart: header failures as above, and **application** failures, packets that fail only when
application dissectors run (a malformed DHCP message, a DNS expert error).  The full run also gives each
packet's top protocol (the last of ``frame.protocols``), counted per file in ``protocols``.

A packet can fail in several ways; ``failed`` counts packets with at least one failure (application ones
included).  A file passes when it holds a packet and no packet fails (:attr:`FileReport.ok`,
:meth:`FileReport.passes`): an empty capture fails.

Checksum offload: a capture taken on the sending host (loopback, or a card that computes checksums) holds TCP
and UDP checksums that the hardware fills in later; Linux leaves the pseudo-header sum in the field.  Packets
whose only fault is a bad checksum count as ``checksum_only``; those of them whose bad TCP/UDP checksums all
hold that pseudo-header sum count as ``offload`` too.  :meth:`FileReport.failures` applies a checksum policy
(:data:`CHECKSUM_POLICIES`): ``strict`` counts every bad checksum, ``offload`` (``netdiff validate``'s default)
reports offload packets apart instead of as failures, ``off`` does so for every checksum-only packet.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netdiff_lib import checksum
from netdiff_lib.errors import InputError
from netdiff_lib.pcap import PcapFile
from netdiff_lib.pcap.linktypes import LINKTYPE_ETHERNET, RAW_IP_LINKTYPES

SEVERITY_WARN, SEVERITY_ERROR = 0x00600000, 0x00800000
GROUP_CHECKSUM, GROUP_SEQUENCE, GROUP_MALFORMED, GROUP_PROTOCOL = 0x01000000, 0x02000000, 0x07000000, 0x09000000
COUNTED_WARNING_GROUPS = frozenset({GROUP_CHECKSUM, GROUP_MALFORMED, GROUP_PROTOCOL})
CHECKSUM_FIELDS = ("ip.checksum.status", "tcp.checksum.status", "udp.checksum.status", "icmp.checksum.status",
                   "icmpv6.checksum.status")
_FIELDS = ("frame.number", "_ws.malformed", "_ws.expert.severity", "_ws.expert.group", "_ws.expert.message",
           *CHECKSUM_FIELDS, "frame.protocols")
SCOPES = ("layers", "headers", "full")
CHECKSUM_POLICIES = ("offload", "strict", "off")
MAX_PROBLEMS = 20
#: TCP option kind -> allowed total lengths (the built-in validator's view, as Wireshark's dissector checks).
TCP_OPTION_LENGTHS = {2: {4}, 3: {3}, 4: {2}, 5: {10, 18, 26, 34}, 8: {10}}
_BE16 = struct.Struct(">H")


@dataclass
class Problem:
    """One failure of one packet (``frame`` counts from 1)."""

    frame: int
    kind: str
    detail: str


@dataclass
class FileReport:
    """Validation result of one pcap."""

    path: str
    tool: str
    packets: int = 0
    malformed: int = 0
    expert_errors: int = 0
    bad_checksums: int = 0
    application: int = 0
    failed: int = 0
    checksum_only: int = 0  # failed packets whose only fault is a bad TCP/UDP/IP/ICMP checksum
    offload: int = 0  # of those, packets whose bad TCP/UDP checksums hold the pseudo-header sum (checksum offload)
    problems: list[Problem] = field(default_factory=list)
    protocols: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No packet failed, and there was a packet: an empty capture is not a valid one."""
        return self.passes("strict")

    def failures(self, checksums: str = "strict") -> int:
        """Failing packets under a checksum policy (:data:`CHECKSUM_POLICIES`, module docstring)."""
        excused = {"strict": 0, "offload": self.offload, "off": self.checksum_only}
        if checksums not in excused:
            raise ValueError(f"checksums must be one of {CHECKSUM_POLICIES}")
        return self.failed - excused[checksums]

    def add(self, frame: int, kinds: dict[str, str], offload: bool = False) -> None:
        """Record the failures of one packet (kind -> detail); ``offload``: its bad TCP/UDP checksums hold the
        pseudo-header sum that a sending host leaves for the network card."""
        self.packets += 1
        if not kinds:
            return
        self.failed += 1
        self.malformed += "malformed" in kinds
        self.expert_errors += "expert" in kinds
        self.bad_checksums += "checksum" in kinds
        self.application += "application" in kinds
        only = is_checksum_only(kinds)
        self.checksum_only += only
        self.offload += only and offload and kinds["checksum"] in ("bad tcp checksum", "bad udp checksum")
        for kind, detail in kinds.items():
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append(Problem(frame, kind, detail))

    def passes(self, checksums: str = "strict") -> bool:
        """The file passes under a checksum policy: it holds a packet and none fails."""
        return self.packets > 0 and not self.failures(checksums)

    def summary(self, checksums: str = "strict") -> str:
        if not self.packets:
            return f"{self.path}: FAILED ({self.tool}): no packets"
        state = "ok" if not self.failures(checksums) else "FAILED"
        apart = self.failed - self.failures(checksums)
        why = "checksum offload" if checksums == "offload" else "not judged: --checksums off"
        offload = f" ({apart} only on checksums, {why})" if apart else ""
        return (f"{self.path}: {state} ({self.tool}): {self.packets} packets, {self.malformed} malformed, "
                f"{self.expert_errors} with expert errors, {self.bad_checksums} with bad checksums{offload}, "
                f"{self.application} with malformed application layers")


def is_checksum_only(kinds: dict[str, str]) -> bool:
    """True when a packet's only failures are bad checksums (and tshark's "Bad checksum" expert infos about
    them): what a capture taken on the sending host shows when the NIC computes checksums (offload)."""
    experts = [e for e in kinds.get("expert", "").split("; ") if e]
    return ("checksum" in kinds and set(kinds) <= {"checksum", "expert"}
            and all(e.startswith("Bad checksum") for e in experts))


def tshark_path() -> str | None:
    return shutil.which("tshark")


def tshark_command(path: str | Path, scope: str = "headers") -> list[str]:
    """The tshark invocation used for one file."""
    cmd = [tshark_path() or "tshark", "-r", str(path), "-n",
           "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"]
    if scope == "headers":
        cmd += ["-d", "tcp.port==0-65535,data", "-d", "udp.port==0-65535,data"]
    cmd += ["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=|"]
    for name in _FIELDS:
        cmd += ["-e", name]
    return cmd


def _expert_failures(sev: str, group: str, message: str) -> list[str]:
    sevs, groups, msgs = sev.split("|"), group.split("|"), message.split("|")
    out = []
    for i, s in enumerate(sevs):
        if not s:
            continue
        sv, gr = int(s), int(groups[i]) if i < len(groups) and groups[i] else 0
        if sv >= SEVERITY_ERROR or (sv >= SEVERITY_WARN and gr in COUNTED_WARNING_GROUPS):
            out.append(msgs[i] if i < len(msgs) else "expert info")
    return out


def line_failures(cols: list[str]) -> dict[str, str]:
    """The failures (kind -> detail) of one packet from its tshark field columns (:data:`_FIELDS` in order)."""
    cols = cols + [""] * (len(_FIELDS) - len(cols))
    kinds: dict[str, str] = {}
    if cols[1]:
        first = cols[1].split("|")[0]
        kinds["malformed"] = first if first.startswith("[") else "malformed packet"
    experts = _expert_failures(cols[2], cols[3], cols[4])
    if experts:
        kinds["expert"] = "; ".join(experts)
    bad = [CHECKSUM_FIELDS[i].split(".")[0] for i, v in enumerate(cols[5:5 + len(CHECKSUM_FIELDS)])
           if "0" in v.split("|")]
    if bad:
        kinds["checksum"] = "bad " + "/".join(bad) + " checksum"
    return kinds


def parse_tshark_fields(path: str, text: str, application: str | None = None,
                        offloaded: Container[int] = ()) -> FileReport:
    """A report from tshark's field output (one line per packet, :data:`_FIELDS` in order); with the output of a
    full run as ``application``, packets that fail only there count as application failures; ``offloaded``: the
    frames with the :func:`offload_signature`."""
    rep = FileReport(str(path), "tshark")
    full = _by_frame(application) if application is not None else {}
    for line in text.splitlines():
        cols = line.split("\t")
        if cols[0].strip():
            frame = int(cols[0])
            kinds = line_failures(cols)
            if not kinds and full.get(frame, ({}, ""))[0]:
                kinds = {"application": "; ".join(full[frame][0].values())}
            rep.add(frame, kinds, frame in offloaded)
    source = full.values() if application is not None else ((None, c[-1]) for c in _columns(text))
    for _, protos in source:
        top = protos.split(":")[-1] if protos else "none"
        rep.protocols[top] = rep.protocols.get(top, 0) + 1
    return rep


def _columns(text: str) -> list[list[str]]:
    rows = [line.split("\t") for line in text.splitlines()]
    return [r + [""] * (len(_FIELDS) - len(r)) for r in rows if r[0].strip()]


def _by_frame(text: str) -> dict[int, tuple[dict[str, str], str]]:
    """frame -> (failures, frame.protocols) of a tshark run."""
    return {int(c[0]): (line_failures(c), c[len(_FIELDS) - 1]) for c in _columns(text)}


def _run_tshark(path: str | Path, scope: str) -> str:
    proc = subprocess.run(tshark_command(path, scope), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        err = [ln for ln in proc.stderr.splitlines() if "Running as user" not in ln]
        raise InputError(path, f"tshark failed: {' '.join(err)[:300] or proc.returncode}")
    return proc.stdout


def validate_tshark(path: str | Path, scope: str = "layers") -> FileReport:
    """Validate one pcap with tshark."""
    if not Path(path).is_file():
        raise InputError(path, "no such file")
    runs = (_run_tshark(path, "headers"), _run_tshark(path, "full")) if scope == "layers" else (
        _run_tshark(path, scope), None)
    rep = parse_tshark_fields(str(path), *runs)
    return parse_tshark_fields(str(path), *runs, offloaded_frames(path)) if rep.checksum_only else rep


def validate_pcap(path: str | Path, tool: str = "auto", scope: str = "layers") -> FileReport:
    """Validate one pcap; ``tool`` is ``tshark``, ``builtin`` or ``auto`` (tshark when installed)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}")
    if tool == "auto":
        tool = "tshark" if tshark_path() else "builtin"
    if tool == "tshark":
        return validate_tshark(path, scope)
    if tool == "builtin":
        return validate_builtin(path)
    raise ValueError(f"unknown validator {tool!r}")


def validate_pcaps(paths: list[str | Path], tool: str = "auto", scope: str = "layers") -> list[FileReport]:
    """Validate several pcaps (one report each)."""
    return [validate_pcap(p, tool, scope) for p in paths]


# ---------------------------------------------------------------------------------------------------- built-in
# Structure is checked per packet in Python (struct), checksums for a whole batch at once: every checksummed
# region becomes a row of a zero-padded byte matrix and is verified with one vectorised ones'-complement sum.


def _tcp_options(opts: bytes, syn: bool) -> str | None:
    """Why a TCP option area is bad (None when it is well formed).

    NOPs are counted as Wireshark does: a NOP at a 4-byte boundary after other NOPs restarts the count.
    """
    i, nops = 0, 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            return "non-zero header padding after EOL" if any(opts[i + 1:]) else None
        if kind == 1:
            nops = 0 if nops and i % 4 == 0 else nops + 1
            if nops >= 4:
                return "4 NOP in a row"
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2 or i + opts[i + 1] > len(opts):
            return f"option {kind} length goes past the end of the options"
        length = opts[i + 1]
        if kind in TCP_OPTION_LENGTHS and length not in TCP_OPTION_LENGTHS[kind]:
            return f"option {kind} has invalid length {length}"
        if kind == 2 and not syn:
            return "non-SYN packet contains MSS"
        if kind == 3 and opts[i + 2] > 14:
            return "window scale shift exceeds 14"
        i += length
    return None


def _ip_options(opts: bytes) -> str | None:
    """Why an IPv4 option area is bad; Wireshark counts every NOP of the header, not runs."""
    i, nops = 0, 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            return None
        if kind == 1:
            nops, i = nops + 1, i + 1
            if nops >= 4:
                return "4 NOP in a row"
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2 or i + opts[i + 1] > len(opts):
            return f"IPv4 option {kind} length goes past the end of the options"
        i += opts[i + 1]
    return None


def _check_l4(proto: int, l4: bytes, v4: bool, kinds: dict[str, str]) -> bool:
    """Structure of a transport header; True when its checksum should be verified."""
    if proto == 6:
        if len(l4) < 20 or not 20 <= (l4[12] >> 4) * 4 <= len(l4):
            kinds["malformed"] = "bogus TCP header length"
            return False
        bad = _tcp_options(l4[20:(l4[12] >> 4) * 4], bool(l4[13] & 0x02))
        if bad:
            kinds["expert"] = bad
        return True
    if proto == 17:
        if len(l4) < 8 or _BE16.unpack_from(l4, 4)[0] != len(l4):
            kinds["malformed"] = "UDP length does not match the IP payload"
            return False
        return not (v4 and _BE16.unpack_from(l4, 6)[0] == 0)
    if proto in (1, 58):
        if len(l4) < 8:
            kinds["malformed"] = "ICMP message shorter than 8 bytes"
            return False
        return True
    return False


def _check_ip(pkt: bytes, off: int, kinds: dict[str, str], sums: list[tuple[bytes, int, str]]) -> None:
    """Check one IP packet starting at ``off``; queue its checksummed regions in ``sums``."""
    ip = pkt[off:]
    version = ip[0] >> 4 if ip else 0
    if version == 4:
        ihl = (ip[0] & 0xF) * 4
        if len(ip) < 20 or ihl < 20 or ihl > len(ip):
            kinds["malformed"] = "bogus IPv4 header length"
            return
        total = _BE16.unpack_from(ip, 2)[0]
        if not ihl <= total <= len(ip):
            kinds["malformed"] = "IPv4 total length does not match the packet"
            return
        bad = _ip_options(ip[20:ihl])
        if bad:
            kinds["expert"] = bad
        sums.append((ip[:ihl], 0, "ipv4"))
        if _BE16.unpack_from(ip, 6)[0] & 0x3FFF:
            return  # a fragment: no transport header to check
        proto, l4 = ip[9], ip[ihl:total]
        pseudo = _pseudo_sum(ip, proto, len(l4))
    elif version == 6:
        plen = _BE16.unpack_from(ip, 4)[0] if len(ip) >= 40 else -1
        if plen < 0 or 40 + plen > len(ip):
            kinds["malformed"] = "IPv6 payload length does not match the packet"
            return
        proto, l4 = ip[6], ip[40:40 + plen]
        pseudo = _pseudo_sum(ip, proto, len(l4))
    else:
        kinds["malformed"] = f"bogus IP version {version}"
        return
    if _check_l4(proto, l4, version == 4, kinds):
        sums.append((l4, 0 if proto == 1 else pseudo, {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}[proto]))


def _pseudo_sum(ip: bytes, proto: int, length: int) -> int:
    """The (unfolded) sum of the TCP/UDP pseudo-header of an IPv4 or IPv6 packet."""
    words = (12, 14, 16, 18) if ip[0] >> 4 == 4 else range(8, 40, 2)
    return sum(_BE16.unpack_from(ip, k)[0] for k in words) + proto + length


def offload_signature(pkt: bytes, linktype: int) -> bool:
    """True when the packet's TCP or UDP checksum field holds its folded pseudo-header sum: what the sending
    host's kernel leaves for a network card that computes the checksum (checksum offload, CHECKSUM_PARTIAL)."""
    off = ip_offset(pkt, linktype)
    ip = pkt[off:] if off is not None else b""
    if len(ip) >= 20 and ip[0] >> 4 == 4 and not _BE16.unpack_from(ip, 6)[0] & 0x3FFF:
        proto, l4 = ip[9], ip[(ip[0] & 0xF) * 4:_BE16.unpack_from(ip, 2)[0]]
    elif len(ip) >= 40 and ip[0] >> 4 == 6:
        proto, l4 = ip[6], ip[40:40 + _BE16.unpack_from(ip, 4)[0]]
    else:
        return False
    field_at = {6: 16, 17: 6}.get(proto)
    if field_at is None or len(l4) < field_at + 2:
        return False
    total = _pseudo_sum(ip, proto, len(l4))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return _BE16.unpack_from(l4, field_at)[0] == total


def offloaded_frames(path: str | Path) -> set[int]:
    """Frames (from 1) of a pcap that carry the :func:`offload_signature`."""
    out: set[int] = set()
    for batch in PcapFile(path).batches(batch_size=4096):
        out.update(int(batch.index[i]) + 1 for i in range(len(batch))
                   if offload_signature(batch.packet(i), int(batch.linktype[i])))
    return out


def ip_offset(pkt: bytes, linktype: int) -> int | None:
    """Where the IP header starts, or None for a frame that carries no IP (not judged)."""
    if linktype in RAW_IP_LINKTYPES:
        return 0
    if linktype != LINKTYPE_ETHERNET or len(pkt) < 14:
        return None
    off, etype = 14, _BE16.unpack_from(pkt, 12)[0]
    while etype in (0x8100, 0x88A8) and len(pkt) >= off + 4:
        etype, off = _BE16.unpack_from(pkt, off + 2)[0], off + 4
    return off if etype in (0x0800, 0x86DD) else None


def _bad_sums(regions: list[tuple[bytes, int, str]]) -> np.ndarray:
    if not regions:
        return np.zeros(0, bool)
    width = max(len(r) for r, _, _ in regions) + 1
    rows = np.zeros((len(regions), width), np.uint8)
    for i, (r, _, _) in enumerate(regions):
        rows[i, :len(r)] = np.frombuffer(r, np.uint8)
    return ~checksum.verify(rows, np.array([p for _, p, _ in regions], np.uint64))


def validate_builtin(path: str | Path) -> FileReport:
    """Validate one pcap without tshark: header structure, options and checksums (module docstring)."""
    if not Path(path).is_file():
        raise InputError(path, "no such file")
    rep = FileReport(str(path), "builtin")
    for batch in PcapFile(path).batches(batch_size=4096):
        kinds: list[dict[str, str]] = [{} for _ in range(len(batch))]
        regions: list[tuple[bytes, int, str]] = []
        owner: list[int] = []
        for i in range(len(batch)):
            pkt = batch.packet(i)
            off = ip_offset(pkt, int(batch.linktype[i]))
            if off is not None:
                before = len(regions)
                _check_ip(pkt, off, kinds[i], regions)
                owner += [i] * (len(regions) - before)
        for j in np.flatnonzero(_bad_sums(regions)):
            kinds[owner[j]]["checksum"] = f"bad {regions[j][2]} checksum"
        for i, k in enumerate(kinds):
            rep.add(int(batch.index[i]) + 1, k, "checksum" in k and offload_signature(batch.packet(i),
                                                                                      int(batch.linktype[i])))
    return rep
