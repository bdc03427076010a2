"""Small training sets for the tests: folders of ``<label>/<capture>.pcap`` links into ``samples/captures``."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from netdiff_lib.models.native.endpoints import ACK, SYN, flow_ids
from netdiff_lib.models.native.tokens import read_fields
from netdiff_lib.nprint.encode import encode_pcap
from netdiff_lib.trace import Trace
from netdiff_lib.validate import validate_pcap


def link_samples(samples_dir: Path, root: Path, labels: Iterable[str], per_class: int) -> Path:
    """Make ``root/<label>/`` for each label with links to its first ``per_class`` sample captures."""
    for label in labels:
        (root / label).mkdir(parents=True)
        for pcap in sorted((samples_dir / label).glob("*.pcap"))[:per_class]:
            (root / label / pcap.name).symlink_to(pcap)
    return root


def labelled_traces(samples_dir: Path, max_packets: int) -> list[Trace]:
    """Every sample capture as one trace of its first ``max_packets`` packets, labelled by its folder."""
    out = []
    for pcap in sorted(samples_dir.glob("*/*.pcap")):
        t = encode_pcap(pcap, max_packets=max_packets).trace
        t.label = pcap.parent.name
        out.append(t)
    return out


def handshakes(matrices: Iterable[np.ndarray]) -> tuple[int, int]:
    """(TCP connections of three packets or more whose first packet is a pure SYN, those of them that open SYN,
    SYN-ACK, ACK with the directions of a handshake), over the traces' matrices; flows by ports, as reconstruction
    groups them."""
    opened = whole = 0
    for matrix in matrices:
        f = read_fields(matrix)
        sel = np.flatnonzero((f.l3 != 0) & (f.l4 == 1))
        s, d, fl = f.values["sport"][sel], f.values["dport"][sel], f.values["tcp_flags"][sel]
        flow = flow_ids(np.zeros(len(sel)), f.l3[sel], f.l4[sel], s, d)
        for k in np.unique(flow):
            at = np.flatnonzero(flow == k)
            if len(at) >= 3 and fl[at[0]] == SYN and s[at[0]] != d[at[0]]:
                opened += 1
                whole += bool([s[i] == s[at[0]] for i in at[:3]] == [True, False, True]
                              and fl[at[1]] == SYN | ACK and fl[at[2]] & (SYN | ACK) == ACK)
    return opened, whole


def assert_tshark_clean(recs: list, path: Path) -> int:
    """Write the reconstructed traces ``recs`` into one pcap at ``path`` and check that tshark reads every packet
    with no malformed packet, expert error or bad checksum; returns the packets read (skips without tshark)."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    with open(path, "wb") as fh:
        for i, r in enumerate(recs):
            data = r.pcap_bytes()
            fh.write(data if i == 0 else data[24:])  # one file header
    rep = validate_pcap(path, "tshark")
    assert rep.packets == sum(len(r) for r in recs)
    assert (rep.malformed, rep.expert_errors, rep.bad_checksums) == (0, 0, 0), rep.problems[:5]
    return rep.packets
