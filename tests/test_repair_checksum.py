"""netdiff_lib.checksum against scapy's checksums (an independent implementation) on random packets."""

from __future__ import annotations

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.utils import checksum as scapy_checksum

from netdiff_lib import checksum

RNG = np.random.default_rng(7)


def _rows(blobs: list[bytes]) -> np.ndarray:
    width = max(len(b) for b in blobs)
    out = np.zeros((len(blobs), width), np.uint8)
    for i, b in enumerate(blobs):
        out[i, :len(b)] = np.frombuffer(b, np.uint8)
    return out


def test_plain_checksum_matches_scapy_for_even_and_odd_lengths() -> None:
    blobs = [RNG.integers(0, 256, int(n), dtype=np.uint8).tobytes() for n in RNG.integers(1, 80, 200)]
    ours = checksum.internet_checksum(_rows(blobs))
    assert ours.tolist() == [scapy_checksum(b) for b in blobs]


def test_verify_accepts_written_checksums_and_rejects_a_flipped_bit() -> None:
    blobs = [RNG.integers(0, 256, 20, dtype=np.uint8) for _ in range(50)]
    rows = np.stack(blobs)
    rows[:, 10:12] = 0
    ck = checksum.internet_checksum(rows)
    rows[:, 10], rows[:, 11] = ck >> 8, ck & 0xFF
    assert checksum.verify(rows).all()
    rows[:, 3] ^= 0x10
    assert not checksum.verify(rows).any()


def _ipv4_packets(n: int) -> list:
    out = []
    for i in range(n):
        src = ".".join(str(x) for x in RNG.integers(0, 256, 4))
        dst = ".".join(str(x) for x in RNG.integers(0, 256, 4))
        payload = RNG.integers(0, 256, int(RNG.integers(0, 40)), dtype=np.uint8).tobytes()
        l4 = [TCP(sport=int(RNG.integers(1, 65536)), dport=80, seq=int(RNG.integers(0, 2**32))),
              UDP(sport=int(RNG.integers(1, 65536)), dport=53), ICMP(type=8, id=i)][i % 3]
        out.append(IP(bytes(IP(src=src, dst=dst) / l4 / payload)))
    return out


@pytest.mark.parametrize("family", [4, 6])
def test_transport_checksums_with_pseudo_headers_match_scapy(family: int) -> None:
    if family == 4:
        pkts = _ipv4_packets(90)
        l3 = [p[IP] for p in pkts]
        src = np.array([int.from_bytes(bytes(p)[12:16], "big") for p in l3], np.uint64)
        dst = np.array([int.from_bytes(bytes(p)[16:20], "big") for p in l3], np.uint64)
    else:
        pkts = [IPv6(bytes(IPv6(src=f"2001:db8::{i:x}", dst="2001:db8:1::1") / [
            TCP(sport=1000 + i, dport=443), UDP(sport=i + 1, dport=5353), ICMPv6EchoRequest(id=i)][i % 3]
            / bytes(range(i % 17)))) for i in range(60)]
        src = _rows([bytes(p)[8:24] for p in pkts])
        dst = _rows([bytes(p)[24:40] for p in pkts])
    hdr = 20 if family == 4 else 40
    raw = [bytes(p) for p in pkts]
    proto = np.array([r[9] if family == 4 else r[6] for r in raw])
    l4 = [r[hdr:] for r in raw]
    at = {6: 16, 17: 6, 1: 2, 58: 2}
    want = [int.from_bytes(x[at[int(pr)]:at[int(pr)] + 2], "big") for x, pr in zip(l4, proto, strict=True)]
    zeroed = [x[:at[int(pr)]] + b"\0\0" + x[at[int(pr)] + 2:] for x, pr in zip(l4, proto, strict=True)]
    lengths = np.array([len(x) for x in l4])
    if family == 4:
        pseudo = checksum.pseudo_v4(src, dst, proto, lengths)
        pseudo = np.where(proto == 1, 0, pseudo).astype(np.uint64)
    else:
        pseudo = checksum.pseudo_v6(src, dst, proto, lengths)
    assert checksum.internet_checksum(_rows(zeroed), pseudo).tolist() == want
    assert checksum.verify(_rows(l4), pseudo).all()
