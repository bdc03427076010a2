"""``--traces`` values and the counts a segmentation pass reports (see :mod:`netdiff_lib.segment`)."""


from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from netdiff_lib.errors import ConfigError
from netdiff_lib.segment.keys import LOCAL_NETS

MODES = ("file", "flow", "host", "window", "host+window")
FLOW_TIMEOUT = 120.0
SPLIT_BYTES = 256 << 20  # the pipeline cuts a capture bigger than this across encode pods (--traces not file)
NS = 1_000_000_000
BEYOND = "beyond --max-packets"
UNLABELLED_DROPPED = "unlabelled (--unlabelled drop)"
NO_LOCAL = "no local address (--traces host)"
LATE = "earlier than a window already closed"


@dataclass(frozen=True)
class TraceSpec:
    """How a capture is cut into traces (see the module doc)."""

    mode: str = "file"
    window_s: float = 0.0
    flow_timeout_s: float = FLOW_TIMEOUT
    local_nets: tuple[str, ...] = LOCAL_NETS

    @property
    def text(self) -> str:
        return f"{self.mode}:{self.window_s:.15g}" if "window" in self.mode else self.mode

    @property
    def window_ns(self) -> int:
        return round(self.window_s * NS)

    @property
    def timeout_ns(self) -> int:
        return round(self.flow_timeout_s * NS)


def parse_traces(text: str, flow_timeout: float = FLOW_TIMEOUT,
                 local_nets: tuple[str, ...] | None = None) -> TraceSpec:
    """A ``--traces`` value (``file``, ``flow``, ``host``, ``window:SECONDS``, ``host+window:SECONDS``)."""
    mode, _, arg = (text or "file").strip().lower().partition(":")
    if mode not in MODES:
        raise ConfigError(f"--traces {text!r}: expected one of file, flow, host, window:SECONDS, "
                          "host+window:SECONDS")
    window = 0.0
    if "window" in mode:
        try:
            window = float(arg)
        except ValueError:
            window = 0.0
        if not window > 0:
            raise ConfigError(f"--traces {text!r}: a window needs a length in seconds > 0, e.g. window:60")
    elif arg:
        raise ConfigError(f"--traces {text!r}: only window modes take a value (flows: --flow-timeout)")
    if not flow_timeout > 0:
        raise ConfigError(f"--flow-timeout {flow_timeout}: must be > 0 seconds")
    nets = tuple(n.strip() for n in local_nets if n.strip()) if local_nets else LOCAL_NETS
    return TraceSpec(mode, window, float(flow_timeout), nets)


@dataclass
class SegmentStats:
    """What a pass did: packets read, packets in at least one trace, traces per label, packets in none by
    reason (the encoder's skip reasons, e.g. non-IP frames, included)."""

    packets: int = 0
    in_traces: int = 0
    traces: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)

    def update(self, other: SegmentStats) -> None:
        self.packets += other.packets
        self.in_traces += other.in_traces
        self.traces.update(other.traces)
        self.dropped.update(other.dropped)

    def lines(self) -> list[str]:
        out = [f"traces: {sum(self.traces.values())}"]
        out += [f"  {label}: {n}" for label, n in sorted(self.traces.items())]
        out.append(f"packets read: {self.packets}, in traces: {self.in_traces}, in no trace: "
                   f"{sum(self.dropped.values())}")
        out += [f"  {why}: {n}" for why, n in self.dropped.most_common()]
        return out

    def report(self) -> None:
        """Print :meth:`lines` to standard error."""
        import sys

        print("\n".join(self.lines()), file=sys.stderr)


def safe_name(label: str) -> str:
    """A label as a folder name: characters other than letters, digits, ``.``, ``-``, ``_`` and ``+`` become
    ``_`` (``Web Attack \\x96 Brute Force`` -> ``Web_Attack_Brute_Force``)."""
    name = re.sub(r"[^\w.+-]+", "_", label, flags=re.ASCII).strip("._") or "_"
    return name
