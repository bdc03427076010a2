"""The synthetic namespace: names, addresses, MACs and random fields that payloads carry instead of real ones.

Nothing identifying is learned from training captures: host and domain names live under ``example`` (RFC 2606)
for DNS and under ``local`` for mDNS, built from a small fixed word list and numbers; MAC addresses inside
payloads are locally administered and derived from the host key that reconstruction gives each host, so one
client keeps one MAC; addresses inside payloads come from the documentation ranges (RFC 5737).  Everything is
drawn from the numpy generator of the trace, so output is deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

WORDS = ("alder", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "indigo", "juniper", "kestrel",
         "lumen", "maple", "nimbus", "orchid", "pebble", "quartz", "raven", "sierra", "tundra")
DOMAIN = "example"
MDNS_DOMAIN = "local"
#: Documentation networks (RFC 5737) for addresses written inside payloads.
DOC_NETS = ((192, 0, 2), (198, 51, 100), (203, 0, 113))


def word(key: int) -> str:
    """A fixed word plus a number for an integer key (``cedar-7``)."""
    return f"{WORDS[key % len(WORDS)]}-{(key // len(WORDS)) % 1000}"


def hostname(key: int, domain: str = DOMAIN) -> str:
    """A synthetic fully qualified name for a key: ``cedar-7.example``."""
    return f"{word(key)}.{domain}"


def mac(key: int) -> bytes:
    """A locally administered unicast MAC derived from a host key (``02:6e:...``)."""
    k = int(key) * 0x9E3779B1 & 0xFFFFFFFFFF
    return bytes([0x02]) + k.to_bytes(5, "big")


def doc_ip(key: int) -> bytes:
    """A documentation IPv4 address (4 bytes) for a key."""
    net = DOC_NETS[key % len(DOC_NETS)]
    return bytes([*net, 1 + (key // len(DOC_NETS)) % 254])


def rand_bytes(rng: np.random.Generator, n: int) -> bytes:
    """``n`` random bytes."""
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


def text(n: int, seed: int = 0) -> bytes:
    """``n`` bytes of plain lower-case text (words and spaces), for bodies and header padding."""
    out = bytearray()
    i = seed
    while len(out) < n:
        out += WORDS[i % len(WORDS)].encode() + b" "
        i += 7
    return bytes(out[:n])


def pick(rng: np.random.Generator, counts: dict, default: object) -> object:
    """A key of ``counts`` drawn in proportion to its count (``default`` when empty)."""
    if not counts:
        return default
    keys = list(counts)
    p = np.asarray([float(counts[k]) for k in keys])
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]
