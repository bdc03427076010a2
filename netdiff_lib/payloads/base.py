"""What a payload builder sees of its packet, and the interface every service implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Packet:
    """One packet to fill: its payload length, role and flow, the class's learned statistics of the service."""

    length: int
    side: int  # 0: client -> server, 1: server -> client (reconstruction's flow roles)
    first: bool  # the first packet with payload of its side in the flow
    flow: int
    client: int  # host keys (one per host of the trace)
    server: int
    server_port: int
    rng: np.random.Generator
    stats: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)  # shared by the packets of a flow, in time order


@dataclass(frozen=True)
class Service:
    """A payload protocol: the lengths it can fill, how to fill them, and how to learn from real payloads.

    ``fit(length, side)``: the nearest length (at least ``length``) a valid message can have (0 stays 0);
    ``build(packet)``: exactly ``packet.length`` bytes; ``detect(payload)``: whether a real payload is one;
    ``learn(stats, payload, side)``: fold a real payload's structure (never its identifying values) into
    ``stats``.
    """

    name: str
    l4: str
    fit: Callable[[int, int], int]
    build: Callable[[Packet], bytes]
    detect: Callable[[bytes], bool]
    learn: Callable[[dict, bytes, int], None]


def count(stats: dict, key: str, value: object, n: int = 1) -> None:
    """Add ``n`` to ``stats[key][str(value)]``."""
    bucket = stats.setdefault(key, {})
    bucket[str(value)] = bucket.get(str(value), 0) + n


def at_least(minimum: int) -> Callable[[int, int], int]:
    """``fit`` for messages that can take any length from ``minimum`` up."""
    return lambda length, side: 0 if length <= 0 else max(length, minimum)


def fixed(size: int) -> Callable[[int, int], int]:
    """``fit`` for fixed-size messages."""
    return lambda length, side: 0 if length <= 0 else size
