"""Filler bytes for ports without a synthesised service: what ``ports.json`` (made by :mod:`.scan`) says
tshark accepts on each port.

A port absent from the table takes zeros at any length.  A listed port takes its filler within its range of
lengths (shorter payloads are lengthened, longer ones shortened); a ``null`` port takes no payload.  When both
ports of a packet are listed, the filler of the lower port (which dissectors try first) is used, within both
ranges.
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np

from netdiff_lib.payloads.scan import TABLE, filler

#: (filler, shortest, longest or None) of a port pair; None: no payload at all.
Rule = tuple[str, int, int | None] | None
ANY: Rule = ("zero", 1, None)


@lru_cache(maxsize=1)
def table() -> dict[str, dict[int, Rule]]:
    data = json.loads(TABLE.read_text(encoding="utf-8"))
    return {l4: {int(p): (tuple(v) if v is not None else None) for p, v in data[l4].items()} for l4 in ("udp", "tcp")}


@lru_cache(maxsize=1)
def registered() -> np.ndarray:
    """Sorted ports that tshark dissects by number on UDP or TCP (``tshark -G decodes`` at scan time): a
    made-up client port among them would hand a flow's payload to an unrelated dissector, which tshark tries
    first when it is the lower port."""
    data = json.loads(TABLE.read_text(encoding="utf-8"))
    return np.unique(np.asarray(data["registered"]["udp"] + data["registered"]["tcp"], dtype=np.int64))


@lru_cache(maxsize=2)
def _registered_on(l4: str) -> frozenset[int]:
    return frozenset(json.loads(TABLE.read_text(encoding="utf-8"))["registered"][l4])


def dissected(l4: str, port: int) -> bool:
    """Whether tshark hands a ``l4`` ("udp"/"tcp") payload to a dissector registered on ``port`` by number."""
    return int(port) in _registered_on(l4)


def listed(l4: str, port: int) -> bool:
    return int(port) in table()[l4]


def rule(l4: str, sport: int, dport: int) -> Rule:
    """The filler rule of a packet between two ports."""
    t = table()[l4]
    found = [t[p] for p in sorted((int(sport), int(dport))) if p in t]
    if not found:
        return ANY
    if any(r is None for r in found):
        return None
    lo = max(r[1] for r in found)
    his = [r[2] for r in found if r[2] is not None]
    hi = min(his) if his else None
    return None if hi is not None and lo > hi else (found[0][0], lo, hi)


def fit(r: Rule, length: int) -> int:
    """The payload length a rule allows nearest to ``length`` (0 stays 0)."""
    if length <= 0 or r is None:
        return 0
    return max(r[1], length) if r[2] is None else min(max(r[1], length), r[2])


def fill(r: Rule, length: int) -> bytes:
    return filler(r[0] if r is not None else "zero", length)
