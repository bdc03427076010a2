"""Small training sets for the tests: folders of ``<label>/<capture>.pcap`` links into ``samples/captures``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from netdiff_lib.nprint.encode import encode_pcap
from netdiff_lib.trace import Trace


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
