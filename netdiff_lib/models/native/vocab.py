"""Token spaces of single header fields: exact frequent values, escape bins, per-trace slots, byte templates.

Real traffic repeats exact values (a device's handshake sizes, a handful of TTLs and windows, fixed service
ports), so a field's frequent values each get a token of their own.  What is rare still has a token: the
*escape bins* split the rare values seen in training into quantile ranges, and a generated escape token is
drawn uniformly from its range.  Token 0 of every field means "absent" (the field's header is not in the
packet).

Ports are different: a client's ephemeral port is random, but *which packets share it* is the flow structure.
A port seen in few training traces is therefore not a value but a *slot*: the k-th distinct such port of a
trace (in order of first appearance) is slot k, and at decoding each slot of a trace gets one fresh port
drawn from the escape bins, the same for every packet that names the slot.

Option fields (TCP and IPv4 options) are byte strings: a *template* is the option bytes with their
per-packet values (TCP timestamps, SACK edges) cleared, and decoding fills those bytes with random values.

The inter-arrival time is no category: :func:`encode_iat` puts it on a log scale in [-1, 1] for the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise

import numpy as np

from netdiff_lib.payloads.ports import registered

ABSENT = 0
TCP_TIMESTAMP, TCP_SACK = 8, 5
IAT_LOG_MAX = float(np.log1p(600e6))  # 10 minutes between packets maps to +1


def encode_iat(iat_us: np.ndarray) -> np.ndarray:
    """Inter-arrival µs -> [-1, 1] on a log scale (0 µs -> -1, 10 minutes or more -> +1; negative gaps, from
    out-of-order timestamps, count as 0)."""
    z = np.log1p(np.maximum(np.asarray(iat_us, np.float64), 0.0))
    return np.clip(2.0 * z / IAT_LOG_MAX - 1.0, -1.0, 1.0)


def decode_iat(y: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_iat` (clipped to [-1, 1] first)."""
    return np.expm1((np.clip(np.asarray(y, np.float64), -1.0, 1.0) + 1.0) / 2.0 * IAT_LOG_MAX)


@dataclass(frozen=True)
class Vocab:
    """One field's tokens: 0 absent, ``1..len(values)`` exact values, then escape bins, then slots."""

    bits: int
    values: tuple[int, ...]
    bins: tuple[tuple[int, int], ...]
    slots: int = 0

    @property
    def size(self) -> int:
        return 1 + len(self.values) + (0 if self.slots else len(self.bins)) + self.slots

    @property
    def first_slot(self) -> int:
        return 1 + len(self.values)

    @classmethod
    def fit(cls, values: np.ndarray, bits: int, *, keep: np.ndarray | None = None, max_values: int = 1024,
            n_bins: int = 16, slots: int = 0) -> Vocab:
        """Exact tokens for the values where ``keep`` (default: seen at least twice), the most frequent
        ``max_values`` of them; quantile bins over the rest (and over the whole range when there is none)."""
        values = np.asarray(values, np.int64).ravel()
        uniq, cnt = np.unique(values, return_counts=True)
        kept = cnt >= 2 if keep is None else np.asarray(keep, bool)
        order = np.argsort(-cnt[kept], kind="stable")[:max_values]
        exact = np.sort(uniq[kept][order])
        rare = values[~np.isin(values, exact)]
        return cls(bits, tuple(int(v) for v in exact), _quantile_bins(rare, bits, n_bins), slots)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Values (present packets) -> tokens: exact where known, else the escape bin (or the first slot)."""
        v = np.asarray(values, np.int64)
        exact = np.asarray(self.values, np.int64)
        pos = np.searchsorted(exact, v)
        hit = (pos < len(exact)) & (exact[np.minimum(pos, max(len(exact) - 1, 0))] == v) if len(exact) else (
            np.zeros(v.shape, bool))
        if self.slots:
            escape = np.full(v.shape, self.first_slot)
        else:
            lows = np.array([b[0] for b in self.bins], np.int64)
            escape = self.first_slot + np.clip(np.searchsorted(lows, v, side="right") - 1, 0, len(lows) - 1)
        return np.where(hit, 1 + pos, escape).astype(np.int32)

    def decode(self, tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Tokens -> values (absent and slot tokens give 0: slots are resolved per trace by the caller)."""
        t = np.asarray(tokens, np.int64)
        out = self._table.take(t, mode="clip")  # tokens past the exact values (and below 0) clip to the last (0)
        if not self.slots and self.bins:
            b = t - self.first_slot
            esc = (b >= 0) & (b < len(self.bins))
            out[esc] = self.draw(b[esc], rng)
        return out

    @cached_property
    def _table(self) -> np.ndarray:
        """Token -> value for absent (0) and the exact values."""
        return np.asarray((0, *self.values), np.int64)

    def draw(self, bins: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniform value from each escape bin ``bins`` (indices), other than the exact values where the bin
        leaves room (an escape stands for a rare value)."""
        lo = np.array([b[0] for b in self.bins], np.int64)[bins]
        span = np.array([b[1] - b[0] + 1 for b in self.bins], np.int64)[bins]
        out = lo + np.floor(rng.random(len(lo)) * span).astype(np.int64)
        exact = np.asarray(self.values, np.int64)
        for _ in range(8):
            clash = np.flatnonzero(np.isin(out, exact))
            if not len(clash):
                break
            out[clash] = lo[clash] + np.floor(rng.random(len(clash)) * span[clash]).astype(np.int64)
        return out

    def to_dict(self) -> dict:
        return {"bits": self.bits, "values": list(self.values), "bins": [list(b) for b in self.bins],
                "slots": self.slots}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        return cls(int(d["bits"]), tuple(int(v) for v in d["values"]),
                   tuple((int(a), int(b)) for a, b in d["bins"]), int(d.get("slots", 0)))


def _quantile_bins(rare: np.ndarray, bits: int, n_bins: int) -> tuple[tuple[int, int], ...]:
    """Contiguous bins covering ``0 .. 2^bits - 1`` whose inner edges are quantiles of ``rare``."""
    top = (1 << bits) - 1
    if len(rare) == 0 or n_bins <= 1:
        return ((0, top),)
    qs = np.unique(np.quantile(rare, np.linspace(0, 1, n_bins + 1)[1:-1], method="lower").astype(np.int64))
    edges = [0, *[int(q) + 1 for q in qs if 0 <= q < top], top + 1]
    edges = sorted(set(edges))
    return tuple((a, b - 1) for a, b in pairwise(edges))


def slot_tokens(sport: np.ndarray, dport: np.ndarray, present: np.ndarray, vocab: Vocab,
                trace_of: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Port tokens of one trace's packets: exact service ports, else the trace's slot of that port (slots
    numbered by first appearance, a packet's source port before its destination port; the last slot is
    shared by all ports beyond it).  ``trace_of``: each packet's trace, for several traces laid end to end."""
    st, dt = vocab.encode(sport), vocab.encode(dport)
    st[~present], dt[~present] = ABSENT, ABSENT
    toks = np.stack([st, dt], axis=1).ravel()
    ports = np.stack([sport, dport], axis=1).ravel().astype(np.int64)
    trace = np.zeros(len(ports), np.int64) if trace_of is None else np.repeat(np.asarray(trace_of, np.int64), 2)
    esc = np.flatnonzero(toks == vocab.first_slot)
    if len(esc):
        keys, first, inverse = np.unique((trace[esc] << 16) | ports[esc], return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first, kind="stable"), kind="stable")  # keys in order of first appearance
        rank -= np.searchsorted(keys >> 16, keys >> 16)  # ... within their trace (traces are contiguous)
        toks[esc] = vocab.first_slot + np.minimum(rank[inverse.ravel()], vocab.slots - 1)
    pair = toks.reshape(-1, 2)
    return pair[:, 0].copy(), pair[:, 1].copy()


SLOT_BIN = 1024  # width of the port ranges of a slot histogram (64 ranges over the 16-bit port space)


def slot_histogram(ports: np.ndarray) -> list[float]:
    """Share of ``ports`` in each of the 64 ranges of :data:`SLOT_BIN` ports."""
    hist = np.bincount(np.asarray(ports, np.int64) // SLOT_BIN, minlength=65536 // SLOT_BIN).astype(np.float64)
    return (hist / max(hist.sum(), 1.0)).round(6).tolist()


def resolve_slots(tokens: np.ndarray, vocab: Vocab, trace_of: np.ndarray, weights: np.ndarray,
                  rng: np.random.Generator, distinct: bool = False) -> np.ndarray:
    """Port values for slot tokens ``(n, k)`` (a packet's source and destination port: one table for both):
    each (trace, slot) gets one port, drawn from the trace's range histogram ``weights`` (n_traces, 64) and
    never a service port of the vocabulary nor a port that tshark dissects by number (``distinct``: nor another
    slot's port of the trace); other tokens decode as values."""
    trace_of = np.repeat(np.asarray(trace_of)[:, None], np.shape(tokens)[1], axis=1)
    values = vocab.decode(tokens, rng)
    slot = np.asarray(tokens, np.int64) - vocab.first_slot
    is_slot = (slot >= 0) & (slot < vocab.slots)
    if is_slot.any():
        cum = np.cumsum(np.asarray(weights, np.float64), axis=1)
        n_traces = len(cum)
        u = rng.random((n_traces, vocab.slots)) * cum[:, -1:]
        bins = (u[..., None] > cum[:, None, :]).sum(axis=-1)
        table = bins * SLOT_BIN + rng.integers(0, SLOT_BIN, size=bins.shape)
        taken = np.union1d(np.asarray(vocab.values, np.int64), registered())
        for _ in range(16):  # a slot is a port the trace does not share with a service: redraw collisions
            clash = np.isin(table, taken) | (table == 0) | (_repeated(table) if distinct else False)
            if not clash.any():
                break
            table[clash] = bins[clash] * SLOT_BIN + rng.integers(0, SLOT_BIN, size=int(clash.sum()))
        values[is_slot] = table[trace_of[is_slot], slot[is_slot]]
    return values


def _repeated(table: np.ndarray) -> np.ndarray:
    """Per row: which entries repeat an earlier entry of the row (in sorted order)."""
    order = np.argsort(table, axis=1, kind="stable")
    st = np.take_along_axis(table, order, axis=1)
    dup = np.zeros(st.shape, bool)
    dup[:, 1:] = st[:, 1:] == st[:, :-1]
    out = np.zeros(st.shape, bool)
    np.put_along_axis(out, order, dup, axis=1)
    return out


@dataclass(frozen=True)
class Templates:
    """Option byte strings as tokens: 0 absent header, 1 no options, then templates (hex) seen in training."""

    items: tuple[str, ...]
    max_bytes: int

    @property
    def size(self) -> int:
        return 2 + len(self.items)

    @classmethod
    def fit(cls, templates: list[str], max_bytes: int, min_count: int = 2, max_items: int = 256) -> Templates:
        uniq, cnt = np.unique(np.array([t for t in templates if t], dtype=object).astype(str), return_counts=True)
        order = np.argsort(-cnt, kind="stable")
        keep = [str(uniq[i]) for i in order if cnt[i] >= min_count][:max_items]
        return cls(tuple(sorted(keep)), max_bytes)

    def encode(self, templates: list[str]) -> np.ndarray:
        """Unknown templates become "no options" (the fit reports how often that happens)."""
        index = {t: 2 + i for i, t in enumerate(self.items)}
        return np.array([index.get(t, 1) for t in templates], np.int32)

    def decode(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Tokens -> (option bytes (n, max_bytes) uint8 with per-packet values randomised, lengths (n,))."""
        t = np.clip(np.asarray(tokens, np.int64), 0, self.size - 1)
        table, var, lengths = self._tables
        out = table[t]
        noise = rng.integers(0, 256, size=(len(t), self.max_bytes), dtype=np.uint8)
        return np.where(var[t], noise, out), lengths[t]

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per token: the template's bytes, which of them are per-packet values, its length."""
        table = np.zeros((self.size, self.max_bytes), np.uint8)
        var = np.zeros((self.size, self.max_bytes), bool)
        lengths = np.zeros(self.size, np.int64)
        for i, hexs in enumerate(self.items):
            raw = bytes.fromhex(hexs)
            table[2 + i, : len(raw)] = np.frombuffer(raw, np.uint8)
            var[2 + i, : len(raw)] = variable_bytes(raw)
            lengths[2 + i] = len(raw)
        return table, var, lengths

    def to_dict(self) -> dict:
        return {"items": list(self.items), "max_bytes": self.max_bytes}

    @classmethod
    def from_dict(cls, d: dict) -> Templates:
        return cls(tuple(d["items"]), int(d["max_bytes"]))


def variable_bytes(raw: bytes, tcp: bool = True) -> np.ndarray:
    """Which option bytes hold per-packet values: TCP timestamp values and SACK edges."""
    var = np.zeros(len(raw), bool)
    pos = 0
    while pos < len(raw):
        kind = raw[pos]
        if kind in (0, 1):
            pos += 1
            continue
        if pos + 1 >= len(raw) or raw[pos + 1] < 2:
            break
        length = raw[pos + 1]
        if tcp and kind in (TCP_TIMESTAMP, TCP_SACK):
            var[pos + 2 : pos + length] = True
        pos += length
    return var


def template_of(raw: bytes, tcp: bool = True) -> str:
    """The template (hex) of option bytes: per-packet values (:func:`variable_bytes`) cleared.  Plain Python on
    purpose: it runs once per packet, on a few dozen bytes."""
    out, pos, n = bytearray(raw), 0, len(raw)
    while pos < n:
        kind = raw[pos]
        if kind in (0, 1):
            pos += 1
            continue
        if pos + 1 >= n or raw[pos + 1] < 2:
            break
        length = raw[pos + 1]
        if tcp and kind in (TCP_TIMESTAMP, TCP_SACK) and pos + 2 < n:
            end = min(pos + length, n)
            out[pos + 2 : end] = bytes(end - pos - 2)
        pos += length
    return out.hex()
