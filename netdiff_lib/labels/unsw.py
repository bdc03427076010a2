"""UNSW-NB15: the four raw CSVs ``UNSW-NB15_1.csv`` .. ``UNSW-NB15_4.csv``.

They have no header row: their 49 columns are listed in ``NUSW-NB15_features.csv`` (``srcip, sport, dstip,
dsport, proto, state, dur, ..., Stime, Ltime, ..., attack_cat, Label``). A file is recognised by its shape: 49
columns, an IPv4 address first, a protocol name fifth. A row labels its flow from ``Stime`` to ``Ltime`` (Unix
seconds; a second of slack each side) with its ``attack_cat`` (spaces stripped, ``Backdoors`` as ``Backdoor``),
or ``Normal`` when ``Label`` is 0. Quirks: ports written in hex (``0x000b``) or as ``-``, protocols by name.

The training and testing sets (``UNSW_NB15_training-set.csv``, ``UNSW_NB15_testing-set.csv``) have a header but
no addresses, ports or times: their rows cannot be mapped to packets, and they are refused with that reason.
"""

from __future__ import annotations

import csv
import ipaddress
from pathlib import Path

from netdiff_lib.errors import InputError
from netdiff_lib.labels.base import NS, LabelIndex, addr_int, flow_key, port_number, proto_number, seconds_ns

FORMAT = "UNSW-NB15 CSV"
COLUMNS = ("srcip", "sport", "dstip", "dsport", "proto", "state", "dur", "sbytes", "dbytes", "sttl", "dttl",
           "sloss", "dloss", "service", "sload", "dload", "spkts", "dpkts", "swin", "dwin", "stcpb", "dtcpb",
           "smeansz", "dmeansz", "trans_depth", "res_bdy_len", "sjit", "djit", "stime", "ltime", "sintpkt",
           "dintpkt", "tcprtt", "synack", "ackdat", "is_sm_ips_ports", "ct_state_ttl", "ct_flw_http_mthd",
           "is_ftp_login", "ct_ftp_cmd", "ct_srv_src", "ct_srv_dst", "ct_dst_ltm", "ct_src_ltm",
           "ct_src_dport_ltm", "ct_dst_sport_ltm", "ct_dst_src_ltm", "attack_cat", "label")
_COL = {name: i for i, name in enumerate(COLUMNS)}
_CATEGORIES = {"backdoors": "Backdoor"}
SLACK_NS = NS


def is_raw_row(row: list[str]) -> bool:
    """Whether a first row looks like a raw UNSW-NB15 record (no header)."""
    if len(row) != len(COLUMNS):
        return False
    try:
        ipaddress.ip_address(row[0].strip())
    except ValueError:
        return False
    return row[4].strip().isalpha()


def is_header(header: list[str]) -> bool:
    names = [c.strip().lower() for c in header]
    return names[:4] == ["srcip", "sport", "dstip", "dsport"]


def is_train_test(header: list[str]) -> bool:
    names = {c.strip().lower() for c in header}
    return {"attack_cat", "label", "proto", "dur"} <= names and "srcip" not in names


def refuse_train_test(path: Path) -> None:
    raise InputError(path, "a UNSW-NB15 training/testing set CSV: it has no addresses, ports or times, so its "
                           "rows cannot be mapped to packets; use the raw UNSW-NB15_1.csv .. UNSW-NB15_4.csv")


def category(attack_cat: str, label: str) -> str:
    """The class of a row: its attack category, or ``Normal``."""
    cat = attack_cat.strip()
    if label.strip() == "0" or (not cat and label.strip() in ("", "0")):
        return "Normal"
    if not cat:
        raise ValueError("Label 1 but no attack_cat")
    return _CATEGORIES.get(cat.lower(), cat)


def read_unsw(path: Path, rows: csv.reader, first: list[str] | None, index: LabelIndex) -> None:
    """Fill ``index`` from ``first`` (a record, or None after a header row) and the rest of ``rows``."""
    if first is not None:
        _row(first, 1, index)
    for row in rows:
        if not any(c.strip() for c in row):
            index.skipped["blank rows"] += 1
            continue
        _row(row, rows.line_num, index)


def _row(row: list[str], line: int, index: LabelIndex) -> None:
    if len(row) != len(COLUMNS):
        index.fail(line, f"{len(row)} columns, expected {len(COLUMNS)}")
        return
    try:
        label = category(row[_COL["attack_cat"]], row[_COL["label"]])
        proto = proto_number(row[_COL["proto"]])
        key = flow_key(proto, addr_int(row[_COL["srcip"]]), port_number(row[_COL["sport"]]),
                       addr_int(row[_COL["dstip"]]), port_number(row[_COL["dsport"]]))
        start, end = seconds_ns(row[_COL["stime"]]), seconds_ns(row[_COL["ltime"]])
    except ValueError as exc:
        if "unknown protocol" in str(exc):  # 'unas', 'arp', ...: no IP flow the packets could match
            index.skipped["rows of other protocols"] += 1
            return
        index.fail(line, f"bad value: {exc}")
        return
    if end < start:
        index.fail(line, f"bad value: Ltime {row[_COL['ltime']]} before Stime {row[_COL['stime']]}")
        return
    index.add_flow(key, start - SLACK_NS, end + SLACK_NS, label)
