"""``netdiff reconstruct``: generated nPrint matrices -> protocol-correct, replayable pcaps.

Each input (``.npz`` array file, nPrint CSV, NetDiffusion PNG, or a folder of them) becomes
``OUTDIR/<stem>.pcap``; the change report of every input (share of generated bits changed, per field) can be
written as one JSON file.  Packet times come from the input's own timestamps when it has any, else from an
inter-arrival model (``--iat-model``: one model, or a ``{label: model}`` mapping as the model stage saves).
Payloads are synthesised per service (``--payloads``: the profile a model learned, see
:mod:`netdiff_lib.payloads`).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from netdiff_lib.atomic import read_json, write_json
from netdiff_lib.cli._batch import Summary, add_common, finish, run_files
from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.image import SNAP_RULES
from netdiff_lib.inputs import MATRIX_SUFFIXES, expand, load_trace_any
from netdiff_lib.payloads import PayloadProfile
from netdiff_lib.repair import MAX_TRACE_ROWS, AddressPlan, IatModel, RepairConfig, reconstruct_trace
from netdiff_lib.repair.pipeline import LINKS

NAME = "reconstruct"
HELP = "generated nPrint matrices (.npz, nPrint CSV, PNG) -> valid, replayable pcaps"
ORDER = 13


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, help=".npz array files, nPrint CSV, PNG images, or folders")
    add_common(p)
    p.add_argument("--label", help="class label of every input (default: the trace's, else the file-name prefix)")
    p.add_argument("--iat-model", type=Path, metavar="JSON", help="inter-arrival model(s) for inputs without times")
    p.add_argument("--start", help="time of the first packet: ISO 8601 or seconds since the epoch "
                                   "(default 2024-01-01T00:00:00Z)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampled inter-arrival times")
    p.add_argument("--link", choices=LINKS, default="ethernet", help="Ethernet frames (default) or raw IP")
    p.add_argument("--mtu", type=int, default=1500, help="largest IP packet in bytes (default 1500)")
    p.add_argument("--client-subnet", action="append", default=[], metavar="CIDR", help="client addresses")
    p.add_argument("--server-subnet", action="append", default=[], metavar="CIDR", help="server addresses")
    p.add_argument("--template", type=Path, metavar="PCAP", help="take hosts and services from a real capture")
    p.add_argument("--snap", choices=SNAP_RULES, default="nearest", help="colour snapping for images")
    p.add_argument("--report", type=Path, metavar="JSON", help="write the change report of every input here")
    p.add_argument("--payloads", type=Path, metavar="FILE|MODEL_DIR",
                   help="payload profile (payloads.json, or a model folder holding one; default: built-in)")


def parse_start(text: str | None) -> int | None:
    """ns since the epoch from ISO 8601 (UTC unless it says otherwise) or a number of seconds."""
    if text is None:
        return None
    try:
        return round(float(text) * 1e9)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--start: not a time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round(when.timestamp() * 1e9)


def load_iat_models(path: Path | None) -> dict[str | None, IatModel]:
    """``{None: model}`` for a single model file, ``{label: model}`` for a mapping."""
    if path is None:
        return {}
    data = read_json(path)
    try:
        if isinstance(data, dict) and "format" in data:
            return {None: IatModel.from_dict(data)}
        return {str(k): IatModel.from_dict(v) for k, v in dict(data).items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"not an inter-arrival model ({exc})") from None


def _plan(args: argparse.Namespace) -> AddressPlan:
    if args.template is not None:
        if args.client_subnet or args.server_subnet:
            raise ConfigError("--template and --client-subnet/--server-subnet exclude each other")
        return AddressPlan.from_template(args.template)
    return AddressPlan.subnets(args.client_subnet, args.server_subnet)


def run(args: argparse.Namespace) -> int:
    files = expand(args.inputs, MATRIX_SUFFIXES)
    stems = [f.stem for f in files]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise ConfigError(f"inputs would overwrite each other's output ({', '.join(clash[:5])}.pcap)")
    models = load_iat_models(args.iat_model)
    profile = PayloadProfile.load(args.payloads) if args.payloads is not None else None
    base = RepairConfig(mtu=args.mtu, link=args.link, plan=_plan(args), start_ns=parse_start(args.start),
                        seed=args.seed, payloads=profile)
    reports: list[dict] = []

    def work(path: Path, summary: Summary) -> None:
        trace = load_trace_any(path, None, snap=args.snap, max_rows=MAX_TRACE_ROWS)
        if args.label:
            trace.label = args.label
        model = models.get(trace.label, models.get(None))
        cfg = RepairConfig(**{**base.__dict__, "iat_model": model})
        rec = reconstruct_trace(trace, cfg, name=path)
        for note in rec.report.notes:
            tqdm.write(f"{path}: {note}", file=sys.stderr)
        out = rec.write(args.out / f"{path.stem}.pcap")
        summary.packets += len(rec)
        summary.skipped["padding rows"] += rec.report.padding_rows
        summary.outputs.append(str(out))
        reports.append({"input": str(path), "output": str(out), **rec.report.to_dict()})

    summary = run_files(files, work, args, "reconstruct")
    if args.report is not None:
        write_json(args.report, reports)
    return finish(summary)
