"""What reconstruction changed: per trace, the share of generated bits that differ in the output.

The comparison is between the generated matrix and the nPrint matrix of the written packets, in the input
layout, over the rows that became packets (padding rows are counted separately).  A bit counts as changed when
its value in {-1, 0, 1} differs, so a -1 that had to become 0 or 1 counts, as does a generated bit beyond the
repaired header length that is now -1.  Both matrices are compared packed (value bits and on-the-wire bits,
8 a byte): changed bits are counted per byte column, and bit by bit only in the few bytes that fields share
(version / IHL, flags), then summed over the schema's field spans.  :meth:`RepairReport.kept_fraction` leaves
out address and checksum fields, which reconstruction must rewrite (addresses come from the address plan,
checksums from the bytes): it is the faithfulness measure of a real trace's round trip.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from netdiff_lib.repair.headers import popcount
from netdiff_lib.schema import ADDRESS_FIELDS, Layout

CHECKSUM_FIELDS: tuple[str, ...] = ("ipv4_cksum", "tcp_cksum", "udp_cksum", "icmp_cksum")


@dataclass
class RepairReport:
    """Per-trace statistics of a reconstruction (JSON-serialisable through :meth:`to_dict`)."""

    label: str | None = None
    source: str | None = None
    rows: int = 0
    packets: int = 0
    padding_rows: int = 0
    protocols: dict[str, int] = field(default_factory=dict)
    flows: int = 0
    tcp_sessions: int = 0
    bits: int = 0
    bits_changed: int = 0
    field_bits: dict[str, int] = field(default_factory=dict)
    field_changed: dict[str, int] = field(default_factory=dict)
    #: Packets whose payload length changed so that a valid message fits; packets with payload per service.
    payload_adjusted: int = 0
    payload_services: dict[str, int] = field(default_factory=dict)
    #: What else reconstruction had to do to the trace (e.g. move its packet times into the pcap range).
    notes: list[str] = field(default_factory=list)

    @property
    def changed_fraction(self) -> float:
        """Share of all compared bits that changed."""
        return self.bits_changed / self.bits if self.bits else 0.0

    def field_fraction(self, name: str) -> float:
        bits = self.field_bits.get(name, 0)
        return self.field_changed.get(name, 0) / bits if bits else 0.0

    def kept_fraction(self, exclude: tuple[str, ...] = ADDRESS_FIELDS + CHECKSUM_FIELDS) -> float:
        """Share of bits outside ``exclude`` (default: addresses and checksums) that are unchanged."""
        bits = sum(b for f, b in self.field_bits.items() if f not in exclude)
        changed = sum(c for f, c in self.field_changed.items() if f not in exclude)
        return 1.0 - changed / bits if bits else 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["changed_fraction"] = self.changed_fraction
        d["kept_fraction"] = self.kept_fraction()
        d["field_fraction"] = {f: self.field_fraction(f) for f in self.field_bits}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RepairReport:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def summary(self) -> str:
        protos = ", ".join(f"{k} {v}" for k, v in sorted(self.protocols.items()))
        return (f"{self.packets} packets ({protos}), {self.flows} flows, {self.padding_rows} padding rows; "
                f"{100 * self.changed_fraction:.2f}% of bits changed, "
                f"{100 * self.kept_fraction():.2f}% of non-address non-checksum bits kept, "
                f"{self.payload_adjusted} payload lengths adjusted" + "".join(f"; {n}" for n in self.notes))


def column_counts(mask: np.ndarray, max_value: int = 1) -> np.ndarray:
    """Column sums of a small-valued uint8/bool matrix, accumulated in uint8 blocks of rows (several times
    faster than a wide-integer sum); ``max_value`` bounds the entries."""
    d = np.ascontiguousarray(mask).view(np.uint8)
    step = max(1, 255 // max_value)
    out = np.zeros(d.shape[1], np.int64)
    for start in range(0, len(d), step):
        out += np.add.reduce(d[start:start + step], axis=0, dtype=np.uint8)
    return out


@lru_cache(maxsize=32)
def _field_plan(layout: Layout) -> tuple[np.ndarray, list[tuple[str, bool, np.ndarray]]]:
    """Byte columns to count bit by bit (those of fields that are not whole bytes), and per field whether it is
    counted from byte totals and which byte / bit-count indices it sums."""
    partial = sorted({c for sp in layout.spans.values() if sp.start % 8 or sp.bits % 8
                      for c in range(sp.start // 8, (sp.stop + 7) // 8)})
    where = {c: i for i, c in enumerate(partial)}
    plan = []
    for sp in layout.spans.values():
        if sp.start % 8 or sp.bits % 8:
            idx = np.array([where[b // 8] * 8 + b % 8 for b in range(sp.start, sp.stop)], np.int64)
            plan.append((sp.name, False, idx))
        else:
            plan.append((sp.name, True, np.arange(sp.start // 8, sp.stop // 8)))
    return np.array(partial, np.int64), plan


def compare(generated: np.ndarray, repaired: np.ndarray, layout: Layout) -> tuple[dict[str, int], dict[str, int]]:
    """(bits, changed bits) per field of ``layout`` between two matrices of the same rows."""
    val = (np.packbits(generated > 0, axis=1), np.packbits(generated >= 0, axis=1))
    rep = (np.packbits(repaired > 0, axis=1), np.packbits(repaired >= 0, axis=1))
    return changed_fields(changed_bytes(val, rep), layout)


def changed_bytes(gen: tuple[np.ndarray, np.ndarray], rep: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Per byte of packed matrices (value bytes, on-the-wire bytes): the bits whose {-1, 0, 1} value differs
    (off-wire bits have value 0 on both sides, so a value or on-the-wire difference is a change)."""
    return (gen[0] ^ rep[0]) | (gen[1] ^ rep[1])


def changed_fields(diff: np.ndarray, layout: Layout) -> tuple[dict[str, int], dict[str, int]]:
    """(bits, changed bits) per field from :func:`changed_bytes` of some rows."""
    n = len(diff)
    partial, plan = _field_plan(layout)
    per_byte = column_counts(popcount(diff), 8)
    per_bit = column_counts(np.unpackbits(diff[:, partial], axis=1)) if len(partial) else np.zeros(0, np.int64)
    bits = {sp.name: n * sp.bits for sp in layout.spans.values()}
    changed = {name: int((per_byte if whole else per_bit)[idx].sum()) for name, whole, idx in plan}
    return bits, changed
