"""A plain CSV of host labels: ``host,start,end,label``.

``host`` is an address; ``start`` and ``end`` (optional columns; empty for no bound) are Unix seconds or ISO 8601
date-times (naive ones in ``--labels-tz``, UTC by default). Every packet to or from the host between the two
times gets the label; intervals may repeat a host. Example::

    host,start,end,label
    192.168.10.50,,,victim
    172.16.0.1,2017-07-07T15:56:00-03:00,2017-07-07T16:16:00-03:00,ddos
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

from netdiff_lib.errors import InputError
from netdiff_lib.labels.base import NS, LabelIndex, addr_int, local_ns, seconds_ns, zone

FORMAT = "host label CSV"
OPEN_START, OPEN_END = -(1 << 62), 1 << 62


def is_hosts(header: list[str]) -> bool:
    names = {c.strip().lower() for c in header}
    return {"host", "label"} <= names


def parse_time(text: str, tz: str, default: int) -> int:
    """Unix seconds or ISO 8601 as ns; ``default`` when empty."""
    text = text.strip()
    if not text:
        return default
    try:
        return seconds_ns(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not Unix seconds or an ISO 8601 time: {text!r}") from None
    if dt.tzinfo is None:
        return local_ns(dt, zone("UTC" if tz == "auto" else tz))
    return int(dt.timestamp()) * NS + dt.microsecond * 1000


def read_hosts(path: Path, rows: csv.reader, header: list[str], index: LabelIndex, tz: str) -> None:
    names = [c.strip().lower() for c in header]
    col = {n: names.index(n) for n in ("host", "start", "end", "label") if n in names}
    for row in rows:
        line = rows.line_num
        if not any(c.strip() for c in row):
            index.skipped["blank rows"] += 1
            continue
        cells = [c.strip() for c in row] + [""] * len(names)
        try:
            label = cells[col["label"]]
            if not label:
                raise ValueError("empty label")
            addr = addr_int(cells[col["host"]])
            start = parse_time(cells[col["start"]], tz, OPEN_START) if "start" in col else OPEN_START
            end = parse_time(cells[col["end"]], tz, OPEN_END) if "end" in col else OPEN_END
        except ValueError as exc:
            index.fail(line, f"bad value: {exc}")
            continue
        if end < start:
            index.fail(line, "bad value: end before start")
            continue
        index.add_host(addr, start, end, label)
    if not len(index.hosts) and not index.bad:
        raise InputError(path, "a host label CSV with no rows")
