"""CICFlowMeter CSVs: CIC-IDS2017 (``GeneratedLabelledFlows``/``TrafficLabelling``) and CSE-CIC-IDS2018.

Columns are found by name after stripping spaces and case (2017 writes ``" Source IP"`` with a leading space,
2018 ``Src IP``). A row labels its flow from ``Timestamp`` to ``Timestamp + Flow Duration`` (microseconds).
Quirks handled:

* timestamps in several forms, day first: ``3/7/2017 8:55`` (2017: minutes only, 12-hour clock without AM/PM,
  so 1:15 is 13:15), ``03/07/2017 08:55:58 AM``, ``14/02/2018 08:31:01``, ``2018-02-14 08:31:01``; a time in whole
  minutes matches for the minute after it, and a day-first one with no AM/PM matches at both hours when it has no
  seconds or is from 2017 (CIC-IDS2017 writes a 12-hour clock);
* naive local times: 2017's are the lab's time in New Brunswick, Atlantic Daylight Time (UTC-3), which is why
  they lag the captures' UTC times by three hours; others are taken as UTC. ``--labels-tz`` overrides both;
* blank rows (``,,,,``; 2017's Thursday web attack file has ~288,000), header rows repeated inside 2018's
  files, negative durations (taken as 0), labels in Windows-1252 (``Web Attack \\x96 Brute Force``).

The ``MachineLearningCVE`` CSVs of 2017 and most ``*_TrafficForML_CICFlowMeter.csv`` of 2018 have no addresses:
they cannot be mapped to packets, and are refused with that reason.
"""

from __future__ import annotations

import csv
import re
from datetime import datetime, tzinfo
from functools import lru_cache
from pathlib import Path

from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.labels.base import NS, LabelIndex, addr_int, flow_key, local_ns, port_number, proto_number, zone

FORMAT = "CICFlowMeter CSV"
COLUMNS = {"src": ("sourceip", "srcip"), "sport": ("sourceport", "srcport"), "dst": ("destinationip", "dstip"),
           "dport": ("destinationport", "dstport"), "proto": ("protocol",), "ts": ("timestamp",),
           "dur": ("flowduration",), "label": ("label",)}
HALIFAX_SUMMER = "-03:00"  # fallback when the tz database lacks America/Halifax
_DMY = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?\s*([AaPp][Mm])?")
_YMD = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?")


def norm(name: str) -> str:
    return re.sub(r"[\s_/]", "", name).lower()


def is_cic(header: list[str]) -> bool:
    names = {norm(c) for c in header}
    return "label" in names and "timestamp" in names and bool(names & {"flowduration", "dstport",
                                                                       "destinationport"})


def _zone(spec: str, year: int) -> tzinfo:
    if spec != "auto":
        return zone(spec)
    if year != 2017:
        return zone("UTC")
    try:
        return zone("America/Halifax")
    except ConfigError:  # no tz database: the summer offset
        return zone(HALIFAX_SUMMER)


def parse_timestamp(text: str, tz: str = "auto") -> tuple[list[int], int]:
    """``(candidate start times in ns, resolution in ns)`` of a CICFlowMeter timestamp; ValueError if unknown."""
    text = text.strip()
    m = _DMY.fullmatch(text)
    if m:
        day, month, year, hour, minute, sec, frac, ampm = m.groups()
    else:
        m = _YMD.fullmatch(text)
        if not m:
            raise ValueError(f"unknown timestamp {text!r}")
        year, month, day, hour, minute, sec, frac = m.groups()
        ampm = None
    h = int(hour)
    if ampm:
        if not 1 <= h <= 12:
            raise ValueError(f"hour {h} with {ampm} in {text!r}")
        h = h % 12 + (12 if ampm.lower() == "pm" else 0)
    hours = [h]
    if ampm is None and m.re is _DMY and 1 <= h <= 12 and (sec is None or year == "2017"):  # 12-hour clock
        hours.append(h % 12 + 12 if h != 12 else 0)
    where = _zone(tz, int(year))
    try:
        base = [datetime(int(year), int(month), int(day), hh, int(minute), int(sec or 0)) for hh in hours]
    except ValueError as exc:
        raise ValueError(f"bad date in {text!r}: {exc}") from None
    extra = int(((frac or "") + "000000000")[:9])
    return [local_ns(dt, where) + extra for dt in base], (60 * NS if sec is None else NS)


@lru_cache(maxsize=1 << 14)  # CICFlowMeter's times repeat (2017's are whole minutes)
def _start_times(text: str, tz: str) -> tuple[tuple[int, ...], int]:
    starts, resolution = parse_timestamp(text, tz)
    return tuple(starts), resolution


@lru_cache(maxsize=1 << 12)
def _cached_norm(name: str) -> str:
    return norm(name)


def read_cic(path: Path, rows: csv.reader, header: list[str], index: LabelIndex, tz: str) -> None:
    """Fill ``index`` from the rows after ``header`` (``rows`` yields them with ``line_num`` set)."""
    names = [norm(c) for c in header]
    col = {}
    for key, aliases in COLUMNS.items():
        col[key] = next((names.index(a) for a in aliases if a in names), None)
    if col["src"] is None or col["dst"] is None:
        raise InputError(path, "a CICFlowMeter CSV without Source IP/Destination IP columns (CIC-IDS2017 "
                               "MachineLearningCVE, CSE-CIC-IDS2018 *_TrafficForML_*): its flows cannot be mapped "
                               "to packets; use CIC-IDS2017's GeneratedLabelledFlows (TrafficLabelling) CSVs")
    missing = [k for k in ("sport", "dport", "proto", "ts", "label") if col[k] is None]
    if missing:
        raise InputError(path, f"CICFlowMeter CSV without the column(s) {', '.join(missing)}")
    width = max(i for i in col.values() if i is not None) + 1
    at_label, label_name = col["label"], names[col["label"]]
    c_proto, c_src, c_sport, c_dst, c_dport, c_ts, c_dur = (col[k] for k in ("proto", "src", "sport", "dst", "dport",
                                                                             "ts", "dur"))
    add = index.add_flow
    for row in rows:
        if not (row and row[0].strip()) and not any(c.strip() for c in row):
            index.skipped["blank rows"] += 1
            continue
        if len(row) > at_label and _cached_norm(row[at_label]) == label_name and [norm(c) for c in row] == names:
            index.skipped["repeated header rows"] += 1
            continue
        if len(row) < width:
            index.fail(rows.line_num, f"too few columns: {len(row)}, expected {len(header)}")
            continue
        try:
            label = row[at_label].strip()
            if not label:
                raise ValueError("empty label")
            key = flow_key(proto_number(row[c_proto]), addr_int(row[c_src]), port_number(row[c_sport]),
                           addr_int(row[c_dst]), port_number(row[c_dport]))
            starts, resolution = _start_times(row[c_ts], tz)
            dur = row[c_dur].strip() if c_dur is not None else "0"
            dur_ns = max(int(float(dur or 0) * 1000), 0)
        except ValueError as exc:
            index.fail(rows.line_num, f"bad value: {exc}")
            continue
        for start in starts:
            add(key, start, start + resolution + dur_ns, label)
        index.rows -= len(starts) - 1  # one row, whatever its candidate times
