"""Host decoding of sampled batches: worker processes give exactly what the in-process decoding gives (a fixed
token batch of real captures, and whole generate_traces runs across several batches), pools are reused, settings
fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sample_sets import labelled_traces

from netdiff_lib.config import Config, GenerateConfig, tiny
from netdiff_lib.errors import ConfigError
from netdiff_lib.models.native.field_tokens import FieldTokens
from netdiff_lib.models.native.host_decode import AUTO_MIN_BATCHES, HostDecoder, auto_workers, wait_ready
from netdiff_lib.models.native.model import NativeModel, load_model_dir, save_model_dir
from netdiff_lib.models.native.sampler import generate_traces
from netdiff_lib.models.native.token_decode import BatchCodec, decode_packed
from netdiff_lib.models.native.token_schema import VALUE_FIELDS
from netdiff_lib.models.native.vocab import Templates, Vocab, variable_bytes
from netdiff_lib.trace import Trace

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def traces(samples_dir: Path) -> list[Trace]:
    return labelled_traces(samples_dir, 64)


@pytest.fixture(scope="module")
def rep(traces: list[Trace]) -> FieldTokens:
    return FieldTokens.fit(tiny(), traces, [t.label for t in traces])


def _batch(rep: FieldTokens, traces: list[Trace]) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, list[str]]:
    """The real captures' tokens as one sampled batch (rows of all traces end to end)."""
    enc = [rep.tokenizer.encode(t.matrix, t.iat_us()) for t in traces]
    host = (np.concatenate([e[0] for e in enc]), np.concatenate([e[1] for e in enc]))
    return host, np.array([len(t.matrix) for t in traces]), [t.label for t in traces]


def test_worker_processes_decode_exactly_as_the_calling_thread(rep: FieldTokens, traces: list[Trace]) -> None:
    host, lengths, labels = _batch(rep, traces)
    ref = [rep.decode(host, lengths, labels, np.random.default_rng(s)) for s in (7, 8)]
    clock = {"host_s": 0.0}
    with HostDecoder(rep, 2, clock) as dec:
        jobs = [dec.submit(host, lengths, labels, s) for s in (7, 8)]
        got = [j.result() for j in jobs]
        assert dec.pool is not None
        dec.pool.shutdown()
    for (m, i), (m2, i2) in zip(ref, got, strict=True):
        assert m.dtype == np.int8 and m.shape == (lengths.sum(), rep.layout.width)
        assert np.array_equal(m, m2) and np.array_equal(i, i2)
    assert not np.array_equal(ref[0][0], ref[1][0])  # the seed matters: the comparison can fail
    assert clock["host_s"] > 0


def test_packed_rows_hold_exactly_the_matrix(rep: FieldTokens, traces: list[Trace]) -> None:
    """The packed form holds the header bytes and which are on the wire: the matrix is its expansion."""
    (rows, iat), lengths, labels = _batch(rep, traces)
    trace_of = np.repeat(np.arange(len(lengths)), lengths)
    packed = decode_packed(rep.tokenizer, rows, iat, trace_of, np.random.default_rng(3), labels)
    matrix, _ = packed.expand()
    on = np.unpackbits(packed.on, axis=1, count=packed.val.shape[1])
    per_byte = matrix.reshape(len(matrix), -1, 8)
    assert np.array_equal((per_byte[:, :, 0] >= 0), on.astype(bool))
    assert np.array_equal(np.packbits(per_byte >= 1, axis=2)[:, :, 0], packed.val)
    codec = BatchCodec(rep.tokenizer)
    again = codec.expand(codec.decode_compact((rows, iat), lengths, labels, np.random.default_rng(3)))
    assert np.array_equal(again[0], matrix)


def _old_vocab_decode(vocab: Vocab, tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vocab.decode before its value table was cached (the reference)."""
    t = np.asarray(tokens, np.int64)
    out = np.asarray((0, *vocab.values), np.int64)[np.clip(t, 0, len(vocab.values))]
    if not vocab.slots and vocab.bins:
        b = t - vocab.first_slot
        esc = (b >= 0) & (b < len(vocab.bins))
        out[esc] = vocab.draw(b[esc], rng)
    return out


def _old_templates_decode(tpl: Templates, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Templates.decode before its tables were cached (the reference)."""
    table = np.zeros((tpl.size, tpl.max_bytes), np.uint8)
    var = np.zeros((tpl.size, tpl.max_bytes), bool)
    lengths = np.zeros(tpl.size, np.int64)
    for i, hexs in enumerate(tpl.items):
        raw = bytes.fromhex(hexs)
        table[2 + i, : len(raw)] = np.frombuffer(raw, np.uint8)
        var[2 + i, : len(raw)] = variable_bytes(raw)
        lengths[2 + i] = len(raw)
    t = np.clip(np.asarray(tokens, np.int64), 0, tpl.size - 1)
    noise = rng.integers(0, 256, size=(len(t), tpl.max_bytes), dtype=np.uint8)
    return np.where(var[t], noise, table[t]), lengths[t]


def test_cached_tables_decode_as_before(rep: FieldTokens, traces: list[Trace]) -> None:
    tok = rep.tokenizer
    (rows, _), _, _ = _batch(rep, traces)
    rows = np.concatenate([rows, rows + 3, -rows])  # and tokens out of range, which clip
    for f in VALUE_FIELDS:
        col = rows[:, tok.col(f)]
        new, old = (fn(tok.vocabs[f], col, np.random.default_rng(1)) for fn in (Vocab.decode, _old_vocab_decode))
        assert np.array_equal(new, old), f
    for f, tpl in (("tcp_opts", tok.tcp_opts), ("ip_opts", tok.ip_opts)):
        col = rows[:, tok.col(f)]
        new = tpl.decode(col, np.random.default_rng(1))
        old = _old_templates_decode(tpl, col, np.random.default_rng(1))
        assert all(np.array_equal(a, b) for a, b in zip(new, old, strict=True)), f


def _model(rep: FieldTokens, traces: list[Trace], tmp_path: Path) -> NativeModel:
    cfg = tiny()
    labels = sorted({t.label for t in traces})
    net = rep.network(cfg, len(labels))
    stats = {"lengths": {lab: [5, 12, 40, 64] for lab in labels}, "iat_us": {}, "traces": {}, "packets": {}}
    save_model_dir(tmp_path / "m", dict(net.named_parameters()), cfg, rep, labels, stats)
    return load_model_dir(tmp_path / "m")


def test_generation_is_the_same_whichever_decodes(rep: FieldTokens, traces: list[Trace], tmp_path: Path) -> None:
    model = _model(rep, traces, tmp_path)
    opts = {"seed": 4, "progress": False, "batch_tokens": 256}  # several batches
    thread = generate_traces(model, 3, decode_workers=0, **opts)
    clock: dict[str, float] = {}
    procs = generate_traces(model, 3, decode_workers=2, timings=clock, **opts)
    pool = model.__dict__["_decode_pool"][2]
    wait_ready(model)
    assert len(pool._processes) == 2  # every worker started at once
    again = generate_traces(model, 3, decode_workers=2, **opts)
    assert model.__dict__["_decode_pool"][2] is pool  # started once per model
    assert len(thread) == len(procs) == 3 * len(model.labels)
    for a, b, c in zip(thread, procs, again, strict=True):
        assert a.label == b.label and np.array_equal(a.matrix, b.matrix) and np.array_equal(a.iat_us, b.iat_us)
        assert np.array_equal(b.matrix, c.matrix)
    assert clock["host_s"] > 0
    pool.shutdown()


def test_a_dead_worker_falls_back_to_the_thread(rep: FieldTokens, traces: list[Trace], tmp_path: Path) -> None:
    model = _model(rep, traces, tmp_path)
    opts = {"seed": 2, "progress": False, "batch_tokens": 256}
    ref = generate_traces(model, 2, decode_workers=0, **opts)
    generate_traces(model, 1, decode_workers=1, **opts)  # starts the model's pool
    pool = model.__dict__["_decode_pool"][2]
    for proc in list(pool._processes.values()):
        proc.kill()
        proc.join()
    with pytest.warns(RuntimeWarning, match="decoding processes failed"):
        got = generate_traces(model, 2, decode_workers=1, **opts)
    assert "_decode_pool" not in model.__dict__  # the next request starts a new pool
    assert all(np.array_equal(a.matrix, b.matrix) for a, b in zip(ref, got, strict=True))


def test_decode_settings() -> None:
    assert auto_workers("cpu", 100) == 0
    assert auto_workers("cuda", AUTO_MIN_BATCHES - 1) == 0 and auto_workers("cuda", AUTO_MIN_BATCHES) >= 1
    with pytest.raises(ConfigError, match="decode_workers"):
        GenerateConfig(decode_workers=-2)
    d = tiny().to_dict()
    d["generate"]["decode_workers"] = 3
    assert Config.from_dict(d).generate.decode_workers == 3
