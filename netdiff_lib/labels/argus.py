"""CTU-13's labelled bidirectional NetFlows (Argus ``.binetflow``, e.g. ``capture20110810.binetflow``).

Header ``StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,SrcBytes,Label``.
A row labels its flow from ``StartTime`` (``2011/08/10 09:46:59.607825``) to ``StartTime + Dur`` (seconds), with
a second of slack each side. Quirks: ports in hex (``0x0303``, ICMP type/code) or empty, ``Dir`` padded with
spaces (``   ->``). The class is coarse, as CTU-13's own summary counts flows: ``Botnet-C&C`` (``From-Botnet``
labels with ``CC``), ``Botnet``, ``Normal`` or ``Background``; the full label stays in the file.

The start times carry no time zone; they are read in ``--labels-tz`` (``auto``: UTC). Which zone CTU-13's
Argus files were written in is not documented: if no packet gets a label, try ``--labels-tz Europe/Prague``.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

from netdiff_lib.errors import InputError
from netdiff_lib.labels.base import (
    NS,
    LabelIndex,
    addr_int,
    flow_key,
    local_ns,
    port_number,
    proto_number,
    seconds_ns,
    zone,
)

FORMAT = "Argus binetflow (CTU-13)"
NEEDED = ("starttime", "dur", "proto", "srcaddr", "sport", "dstaddr", "dport", "label")
SLACK_NS = NS


def is_binetflow(header: list[str]) -> bool:
    names = {c.strip().lower() for c in header}
    return {"starttime", "srcaddr", "dstaddr", "label"} <= names


def category(label: str) -> str:
    """CTU-13's coarse class of a ``flow=...`` label."""
    text = label.strip().removeprefix("flow=")
    if "Botnet" in text:
        return "Botnet-C&C" if text.startswith("From-Botnet") and "-CC" in text else "Botnet"
    return "Normal" if "Normal" in text else "Background"


def start_ns(text: str, tz: str) -> int:
    try:
        dt = datetime.strptime(text.strip(), "%Y/%m/%d %H:%M:%S.%f")
    except ValueError:
        try:
            dt = datetime.strptime(text.strip(), "%Y/%m/%d %H:%M:%S")
        except ValueError:
            raise ValueError(f"unknown StartTime {text.strip()!r}") from None
    return local_ns(dt, zone("UTC" if tz == "auto" else tz))


def read_binetflow(path: Path, rows: csv.reader, header: list[str], index: LabelIndex, tz: str) -> None:
    names = [c.strip().lower() for c in header]
    missing = [n for n in NEEDED if n not in names]
    if missing:
        raise InputError(path, f"a binetflow file without the column(s) {', '.join(missing)}")
    col = {n: names.index(n) for n in NEEDED}
    for row in rows:
        line = rows.line_num
        if not any(c.strip() for c in row):
            index.skipped["blank rows"] += 1
            continue
        if len(row) != len(names):
            index.fail(line, f"{len(row)} columns, expected {len(names)}")
            continue
        try:
            label = category(row[col["label"]]) if row[col["label"]].strip() else ""
            if not label:
                raise ValueError("empty label")
            proto = proto_number(row[col["proto"]])
            key = flow_key(proto, addr_int(row[col["srcaddr"]]), port_number(row[col["sport"]]),
                           addr_int(row[col["dstaddr"]]), port_number(row[col["dport"]]))
            start = start_ns(row[col["starttime"]], tz)
            end = start + seconds_ns(row[col["dur"]] or "0")
        except ValueError as exc:
            if "unknown protocol" in str(exc):  # arp, llc, ...: no IP flow the packets could match
                index.skipped["rows of other protocols"] += 1
                continue
            index.fail(line, f"bad value: {exc}")
            continue
        index.add_flow(key, start - SLACK_NS, end + SLACK_NS, label)
