"""The native model's feature map: exact round trips on real traces, fitted maps, block snapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netdiff_lib.models.features import FeatureCodec, ValueMap, decode_iat, encode_iat
from netdiff_lib.nprint.encode import encode_pcap
from netdiff_lib.schema import NETDIFFUSION, bits_to_uint, uint_to_bits


def _traces(folder: Path, per_label: int, max_packets: int = 1024) -> list:
    out = []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for pcap in sorted(label_dir.glob("*.pcap"))[:per_label]:
            trace = encode_pcap(pcap, max_packets=max_packets).trace
            if len(trace):
                out.append(trace)
    return out


@pytest.fixture(scope="module")
def sample_traces(samples_dir: Path) -> list:
    traces = _traces(samples_dir, per_label=3)
    assert len(traces) >= 6
    return traces


def _assert_round_trip(codec: FeatureCodec, traces: list) -> None:
    for t in traces:
        feats = codec.encode(t.matrix, t.iat_us())
        assert feats.dtype == np.float32 and feats.shape == (len(t), codec.width)
        for consistent in (False, True):
            matrix, iat = codec.decode(feats, consistent=consistent)
            np.testing.assert_array_equal(matrix, t.matrix, err_msg=f"{t.source} consistent={consistent}")
        # out-of-order timestamps (negative gaps, seen in real captures) become 0: time only moves forward
        np.testing.assert_allclose(iat, np.maximum(t.iat_us(), 0), rtol=1e-5, atol=1e-3)


def test_schema_driven_plan() -> None:
    codec = FeatureCodec()
    names = {s.name for s in codec.numeric}
    assert {"ipv4_tl", "ipv4_ttl", "tcp_sprt", "tcp_wsize", "udp_len", "icmp_type"} <= names
    assert not names & {"tcp_seq", "tcp_ackn", "tcp_syn", "ipv4_opt", "tcp_opt", "ipv6_fl"}
    assert codec.width == len(codec.bit_cols) + 2 * len(codec.numeric) + 1 == len(codec.names)
    # every column is either a raw bit feature or inside exactly one numeric field
    covered = np.zeros(NETDIFFUSION.width, int)
    covered[codec.bit_cols] += 1
    for s in codec.numeric:
        covered[s.slice] += 1
    assert (covered == 1).all()


def test_round_trip_exact_on_samples_unfitted_and_fitted(sample_traces: list) -> None:
    _assert_round_trip(FeatureCodec(), sample_traces)
    fitted = FeatureCodec().fit([t.matrix for t in sample_traces])
    _assert_round_trip(fitted, sample_traces)
    _assert_round_trip(FeatureCodec.from_dict(fitted.to_dict()), sample_traces)


def test_round_trip_exact_on_iot_sentinel(shared_dir: Path) -> None:
    traces = _traces(shared_dir / "data" / "iot-sentinel", per_label=1)
    assert len(traces) > 20
    fitted = FeatureCodec().fit([t.matrix for t in traces[::2]])  # maps fitted on half, tested on all
    _assert_round_trip(fitted, traces)


@pytest.mark.parametrize("bits", [2, 4, 8, 13, 16])
def test_value_map_every_integer_survives_float32(bits: int) -> None:
    rng = np.random.default_rng(bits)
    values = np.concatenate([rng.integers(0, 1 << bits, 500), np.full(900, (1 << bits) // 3)])
    for vmap in (ValueMap.linear(bits), ValueMap.fit(values, bits)):
        every = np.arange(1 << bits)
        y = vmap.encode(every).astype(np.float32)
        assert y.min() >= -1 and y.max() <= 1 and (np.diff(y) > 0).all()
        np.testing.assert_array_equal(vmap.decode(y), every)


def test_fitted_map_gives_frequent_values_wide_basins() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([np.full(3000, 53), np.full(1000, 443), rng.integers(1024, 65536, 1000)])
    vmap = ValueMap.fit(values, 16)
    grid = vmap.decode(np.linspace(-1, 1, 100_001))
    assert 0.5 < np.mean(grid == 53) < 0.62  # ~ its 60% share (less the 10% linear part)
    assert 0.15 < np.mean(grid == 443) < 0.21
    assert np.mean(grid == 54) < 1e-3
    linear = ValueMap.linear(16).decode(np.linspace(-1, 1, 100_001))
    assert np.mean(linear == 53) < 1e-4


def test_partly_absent_numeric_field_is_refused_in_strict_mode() -> None:
    codec = FeatureCodec()
    m = np.full((2, NETDIFFUSION.width), -1, np.int8)
    tl = NETDIFFUSION.span("ipv4_tl")
    m[0, tl.slice] = uint_to_bits(1500, 16)
    m[1, tl.start : tl.start + 8] = 0
    with pytest.raises(ValueError, match="ipv4_tl of packet 1 is partly absent"):
        codec.encode(m)
    codec.encode(m, strict=False)


def test_consistent_decode_makes_header_blocks_whole(sample_traces: list) -> None:
    codec = FeatureCodec().fit([t.matrix for t in sample_traces])
    t = sample_traces[0]
    feats = codec.encode(t.matrix, t.iat_us())
    noisy = np.clip(feats + np.random.default_rng(0).normal(0, 0.3, feats.shape), -1, 1).astype(np.float32)
    matrix, _ = codec.decode(noisy, consistent=True)
    for block in NETDIFFUSION.blocks:
        span = NETDIFFUSION.block_span(block)
        names = [n for n in NETDIFFUSION.spans if n.startswith(block + "_") and not n.endswith("_opt")]
        cols = np.concatenate([np.arange(NETDIFFUSION.span(n).start, NETDIFFUSION.span(n).stop) for n in names])
        present = (matrix[:, cols] >= 0).all(axis=1)
        absent = (matrix[:, span.slice] < 0).all(axis=1)
        assert (present | absent).all(), block
    # the numbers of a mildly noisy trace still decode to the true values wherever the value is frequent
    ttl = NETDIFFUSION.span("ipv4_ttl")
    on = (t.matrix[:, ttl.slice] >= 0).all(axis=1) & (matrix[:, ttl.slice] >= 0).all(axis=1)
    if on.any():
        agree = bits_to_uint(matrix[on][:, ttl.slice]) == bits_to_uint(t.matrix[on][:, ttl.slice])
        assert agree.mean() > 0.8


def test_iat_scale_round_trip_and_clipping() -> None:
    iat = np.array([0.0, 1.0, 13.0, 2.5e5, 3.0e8])
    np.testing.assert_allclose(decode_iat(encode_iat(iat).astype(np.float32)), iat, rtol=2e-5, atol=1e-3)
    assert encode_iat(np.array([1e12]))[0] == 1.0 and encode_iat(np.array([-5.0]))[0] == -1.0


def test_codec_file_round_trip(tmp_path: Path, sample_traces: list) -> None:
    codec = FeatureCodec().fit([t.matrix for t in sample_traces])
    codec.save(tmp_path / "features.json")
    back = FeatureCodec.load(tmp_path / "features.json")
    assert back.maps == codec.maps and back.layout == codec.layout
    from netdiff_lib.errors import InputError

    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="not a feature codec"):
        FeatureCodec.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match=r"features\.json missing"):
        FeatureCodec.load(tmp_path / "nothing.json")


def test_single_bit_flags_snap_to_the_nearest_value(sample_traces: list) -> None:
    """Bit features are 0 / 1 inside a present block: noise below 0.5 must not turn a clear flag on."""
    codec = FeatureCodec().fit([t.matrix for t in sample_traces])
    for t in sample_traces[:4]:
        feats = codec.encode(t.matrix, t.iat_us())
        rng = np.random.default_rng(1)
        noisy = np.clip(feats + rng.uniform(-0.4, 0.4, feats.shape), -1, 1).astype(np.float32)
        matrix, _ = codec.decode(noisy, consistent=True)
        flags = slice(NETDIFFUSION.span("tcp_ns").start, NETDIFFUSION.span("tcp_fin").stop)
        np.testing.assert_array_equal(matrix[:, flags], t.matrix[:, flags], err_msg=t.source)
