"""Small training sets for the tests: folders of ``<label>/<capture>.pcap`` links into ``samples/captures``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def link_samples(samples_dir: Path, root: Path, labels: Iterable[str], per_class: int) -> Path:
    """Make ``root/<label>/`` for each label with links to its first ``per_class`` sample captures."""
    for label in labels:
        (root / label).mkdir(parents=True)
        for pcap in sorted((samples_dir / label).glob("*.pcap"))[:per_class]:
            (root / label / pcap.name).symlink_to(pcap)
    return root
