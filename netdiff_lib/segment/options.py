"""The trace and label options every command shares (``--traces``, ``--flow-timeout``, ``--local-net``,
``--labels``, ``--labels-tz``, ``--unlabelled``, ``--labels-keep-going``), as one value that crosses process and
pipeline boundaries."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from netdiff_lib.errors import ConfigError
from netdiff_lib.segment.spec import FLOW_TIMEOUT, TraceSpec, parse_traces

if TYPE_CHECKING:
    from netdiff_lib.labels.base import LabelIndex

UNLABELLED_CHOICES = ("drop", "keep")


@dataclass(frozen=True)
class TraceOptions:
    """How captures become traces and where their labels come from (None: the capture's label)."""

    spec: TraceSpec = field(default_factory=TraceSpec)
    labels: tuple[str, ...] = ()
    labels_tz: str = "auto"
    unlabelled: str = "drop"
    keep_going: bool = False

    @property
    def whole_files(self) -> bool:
        """Today's behaviour: one trace per capture, labelled by the capture."""
        return self.spec.mode == "file" and not self.labels

    def index(self) -> LabelIndex | None:
        """The label index (read once per process), or None without ``labels``."""
        if not self.labels:
            return None
        from netdiff_lib.labels import cached_labels

        return cached_labels(tuple(self.labels), self.labels_tz, self.keep_going)


def make_options(traces: str = "file", flow_timeout: float = FLOW_TIMEOUT, local_net: str = "",
                 labels: str | Sequence[str] | None = None, labels_tz: str = "auto", unlabelled: str = "drop",
                 keep_going: bool = False) -> TraceOptions:
    """Check and combine the option values (``local_net``: CIDRs separated by commas; ``labels``: a file or
    several)."""
    if unlabelled not in UNLABELLED_CHOICES:
        raise ConfigError(f"--unlabelled {unlabelled!r}: expected drop or keep")
    nets = tuple(n for n in re.split(r"[,\s]+", local_net or "") if n) or None
    files = (labels,) if isinstance(labels, str) else tuple(labels or ())
    return TraceOptions(parse_traces(traces, flow_timeout, nets), tuple(str(f) for f in files if f),
                        labels_tz or "auto", unlabelled,
                        keep_going)


def add_trace_arguments(p: argparse.ArgumentParser) -> None:
    """The shared options (see the README's "Bring your own data set")."""
    g = p.add_argument_group("traces and labels")
    g.add_argument("--traces", default="file", metavar="MODE",
                   help="how captures become traces: file (one per capture, default), flow (bidirectional 5-tuple "
                        "with an idle timeout), host (a local host's traffic), window:SECONDS, host+window:SECONDS")
    g.add_argument("--flow-timeout", type=float, default=FLOW_TIMEOUT, metavar="S",
                   help=f"idle seconds that end a flow or host trace (default {FLOW_TIMEOUT:g}, nfstream's)")
    g.add_argument("--local-net", default="", metavar="CIDR[,CIDR...]",
                   help="addresses that count as local hosts for --traces host (default: private, loopback, "
                        "link-local and IPv6 unique local addresses)")
    g.add_argument("--labels", metavar="FILE", action="append",
                   help="labels per flow or host, read as one index when repeated: CICFlowMeter CSV "
                        "(CIC-IDS2017/2018), raw UNSW-NB15 CSV, Zeek conn.log with a label column (IoT-23), CTU-13 "
                        "binetflow, or a host,start,end,label CSV")
    g.add_argument("--labels-tz", default="auto", metavar="TZ",
                   help="time zone of label times written without one (default auto: CIC-IDS2017 America/Halifax, "
                        "others UTC), e.g. UTC, -03:00, America/Halifax")
    g.add_argument("--unlabelled", choices=UNLABELLED_CHOICES, default="drop",
                   help="packets the labels do not cover: drop them (default) or keep them as class 'unlabelled'")
    g.add_argument("--labels-keep-going", action="store_true",
                   help="count bad label rows and go on, instead of stopping at the first")


def options_from_args(args: argparse.Namespace) -> TraceOptions:
    """The options of a command line; ``--keep-going`` (encode) also counts bad label rows."""
    keep_going = args.labels_keep_going or bool(getattr(args, "keep_going", False))
    return make_options(args.traces, args.flow_timeout, args.local_net, args.labels, args.labels_tz,
                        args.unlabelled, keep_going)
