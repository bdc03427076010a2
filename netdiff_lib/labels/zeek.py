"""Zeek ``conn.log`` with a label column: IoT-23's ``conn.log.labeled`` (and the Stratosphere logs like it).

The ``#fields`` line names the columns (``ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration
... tunnel_parents label detailed-label``); ``#separator`` gives the separator (a tab, ``\\x09``). Quirk: IoT-23
separates its last three columns by three spaces, not tabs, in the ``#fields`` line and in every row, so a row
with fewer fields than names has its last field split at runs of spaces. A row labels its connection from ``ts``
to ``ts + duration`` (Unix seconds; ``-`` for no duration; a second of slack each side). The class is
``detailed-label`` when it is set (not ``-``), else ``label``: ``Benign``, ``PartOfAHorizontalPortScan``,
``C&C-HeartBeat``, ``DDoS``, ...
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from netdiff_lib.errors import InputError
from netdiff_lib.labels.base import NS, LabelIndex, addr_int, flow_key, port_number, proto_number, seconds_ns

FORMAT = "Zeek conn.log"
NEEDED = ("ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "label")
SLACK_NS = NS


def is_zeek(first: str) -> bool:
    return first.startswith(("#separator", "#fields"))


def _split(line: str, sep: str, width: int) -> list[str]:
    fields = line.split(sep)
    if len(fields) < width and fields and re.search(r"\s{2,}", fields[-1]):
        fields = fields[:-1] + [f for f in re.split(r"\s{2,}", fields[-1].strip())]
    return fields


def read_zeek(path: Path, lines: Iterator[str], index: LabelIndex) -> None:
    """Fill ``index`` from the lines of a labelled conn.log."""
    sep, names, col = "\t", [], {}
    for number, line in enumerate(lines, start=1):
        if line.startswith("#"):
            if line.startswith("#separator"):
                raw = line.split(None, 1)[1] if " " in line or "\t" in line else "\\x09"
                sep = raw.encode().decode("unicode_escape") if raw.startswith("\\x") else raw
            elif line.startswith("#fields"):
                names = _split(line, sep, 0)[1:]
                names = [n for part in names for n in re.split(r"\s{2,}", part.strip())]
                missing = [n for n in NEEDED if n not in names]
                if missing:
                    raise InputError(path, f"line {number}: a conn.log without the column(s) {', '.join(missing)}"
                                           " (a label column is needed: IoT-23's conn.log.labeled)")
                col = {n: i for i, n in enumerate(names)}
            continue
        if not line.strip():
            index.skipped["blank rows"] += 1
            continue
        if not col:
            raise InputError(path, f"line {number}: a record before the #fields line")
        _row(_split(line, sep, len(names)), number, col, len(names), index)


def _row(fields: list[str], line: int, col: dict[str, int], width: int, index: LabelIndex) -> None:
    if len(fields) != width:
        index.fail(line, f"{len(fields)} fields, expected {width}")
        return
    try:
        detailed = fields[col["detailed-label"]].strip() if "detailed-label" in col else "-"
        label = detailed if detailed not in ("", "-", "(empty)") else fields[col["label"]].strip()
        if label in ("", "-", "(empty)"):
            raise ValueError("empty label")
        proto = proto_number(fields[col["proto"]])
        key = flow_key(proto, addr_int(fields[col["id.orig_h"]]), port_number(fields[col["id.orig_p"]]),
                       addr_int(fields[col["id.resp_h"]]), port_number(fields[col["id.resp_p"]]))
        start = seconds_ns(fields[col["ts"]])
        dur = fields[col["duration"]].strip() if "duration" in col else "-"
        end = start + (seconds_ns(dur) if dur not in ("-", "") else 0)
    except ValueError as exc:
        index.fail(line, f"bad value: {exc}")
        return
    index.add_flow(key, start - SLACK_NS, end + SLACK_NS, label)
