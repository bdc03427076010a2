"""Label files of the public data sets, recognised from their first line: ``--labels FILE``.

* CICFlowMeter CSVs (CIC-IDS2017 ``TrafficLabelling``, CSE-CIC-IDS2018): :mod:`netdiff_lib.labels.cic`;
* UNSW-NB15's raw ``UNSW-NB15_1..4.csv`` (no header row): :mod:`netdiff_lib.labels.unsw`;
* Zeek ``conn.log`` with a label column (IoT-23 ``conn.log.labeled``): :mod:`netdiff_lib.labels.zeek`;
* CTU-13's labelled bidirectional NetFlows (Argus ``.binetflow``): :mod:`netdiff_lib.labels.argus`;
* a plain ``host,start,end,label`` CSV: :mod:`netdiff_lib.labels.hosts`.

:func:`read_labels` returns a :class:`~netdiff_lib.labels.base.LabelIndex` that labels packets by flow or host
and time. Files ending in ``.gz`` are read compressed.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from netdiff_lib.errors import InputError
from netdiff_lib.labels import argus, cic, hosts, unsw, zeek
from netdiff_lib.labels.base import UNLABELLED, LabelIndex, read_lines

__all__ = ["UNLABELLED", "LabelIndex", "detect", "read_label_files", "read_labels"]
FORMATS = (cic.FORMAT, unsw.FORMAT, zeek.FORMAT, argus.FORMAT, hosts.FORMAT)


def _first_line(path: Path) -> str:
    for line in read_lines(path):
        if line.strip():
            return line
    raise InputError(path, "empty label file")


def detect(path: str | Path) -> str:
    """The format of a label file (one of :data:`FORMATS`), from its first non-blank line."""
    path = Path(path)
    first = _first_line(path)
    if zeek.is_zeek(first):
        return zeek.FORMAT
    row = next(csv.reader([first]))
    if unsw.is_train_test(row):
        unsw.refuse_train_test(path)
    if unsw.is_raw_row(row) or unsw.is_header(row):
        return unsw.FORMAT
    if cic.is_cic(row):
        return cic.FORMAT
    if argus.is_binetflow(row):
        return argus.FORMAT
    if hosts.is_hosts(row):
        return hosts.FORMAT
    raise InputError(path, f"not a label file netdiff knows (first line {first[:60]!r}): expected a CICFlowMeter "
                           "CSV, a raw UNSW-NB15 CSV, a Zeek conn.log with a label column, a CTU-13 binetflow, or a "
                           "host,start,end,label CSV")


def read_labels(path: str | Path, tz: str = "auto", keep_going: bool = False) -> LabelIndex:
    """Read a label file of any known format (see the module doc) into a :class:`LabelIndex`.

    Bad rows raise :class:`~netdiff_lib.errors.InputError` naming the file, line and cause; with ``keep_going``
    they are counted (``index.bad``) and left out.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such label file")
    fmt = detect(path)
    index = LabelIndex(str(path), fmt, keep_going)
    if fmt == zeek.FORMAT:
        zeek.read_zeek(path, read_lines(path), index)
        return index.finish()
    rows = csv.reader(read_lines(path))
    first = next(rows)
    while not any(c.strip() for c in first):
        first = next(rows)
    if fmt == unsw.FORMAT:
        unsw.read_unsw(path, rows, None if unsw.is_header(first) else first, index)
    elif fmt == cic.FORMAT:
        cic.read_cic(path, rows, first, index, tz)
    elif fmt == argus.FORMAT:
        argus.read_binetflow(path, rows, first, index, tz)
    else:
        hosts.read_hosts(path, rows, first, index, tz)
    return index.finish()


def read_label_files(paths: Sequence[str | Path], tz: str = "auto", keep_going: bool = False) -> LabelIndex:
    """Several label files (e.g. CIC-IDS2017's three Friday CSVs, UNSW-NB15's four) as one index."""
    parts = [read_labels(p, tz, keep_going) for p in paths]
    if len(parts) == 1:
        return parts[0]
    out = LabelIndex(", ".join(p.source for p in parts), " + ".join(dict.fromkeys(p.format for p in parts)),
                     keep_going)
    for part in parts:
        out.merge(part)
    return out.finish()


@lru_cache(maxsize=2)
def cached_labels(paths: tuple[str, ...], tz: str = "auto", keep_going: bool = False) -> LabelIndex:
    """:func:`read_label_files`, read once per process (encode workers label many captures from one index)."""
    return read_label_files(paths, tz, keep_going)
