"""The trace store (netdiff_lib.store): exact round trips of real and generated rows, size, atomic and refused
writes, corrupt files, s3:// through a real S3 server, and the encode side (CLI and pipeline stage) feeding
training and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from long_capture import NS, flows, merge

from netdiff_lib.cli import main
from netdiff_lib.errors import InputError
from netdiff_lib.nprint.encode import encode_pcap
from netdiff_lib.schema import NETDIFFUSION, Layout
from netdiff_lib.store import INDEX_JSON, STORE_FORMAT, StoreWriter, open_store, pack_rows, row_plan
from netdiff_lib.trace import Trace

SHARED = Path("/work/shared/data")
T0 = 1_700_000_000 * NS
PARTS = [("dns/dns_01.pcap", T0), ("http/http_02.pcap", T0 + 10 * NS), ("ssh/ssh_01.pcap", T0 + 20 * NS),
         ("tls/tls_01.pcap", T0 + 30 * NS), ("icmp/icmp_01.pcap", T0 + 40 * NS)]


def _real_traces(samples_dir: Path, layout: Layout = NETDIFFUSION, shared: int = 0) -> list[Trace]:
    """Every sample capture encoded whole, and up to ``shared`` captures of each data set in /work/shared."""
    files = sorted(samples_dir.glob("*/*.pcap"))
    for name in ("packets", "iot-sentinel"):
        files += sorted((SHARED / name).rglob("*.pcap"))[:shared]
    out = []
    for f in files:
        try:
            t = encode_pcap(f, layout, label=f.parent.name).trace
        except InputError:  # a capture the encoder refuses (e.g. an unsupported link type)
            continue
        if len(t):
            t.meta = {"max_packets": 1024, "file": f.name}
            out.append(t)
    return out


def _store_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.iterdir() if p.name != INDEX_JSON)


def _same(a: Trace, b: Trace) -> None:
    assert b.layout == a.layout and np.array_equal(a.matrix, b.matrix)
    assert (a.ts_ns is None and b.ts_ns is None) or np.array_equal(a.ts_ns, b.ts_ns)
    assert (b.label, b.source, b.meta) == (a.label, a.source, a.meta)


def _write(root: Path | str, traces: list[Trace], **kw: int) -> dict:
    """Write ``traces`` into a store at ``root``; what its ``store.json`` says."""
    w = StoreWriter(root, traces[0].layout, **kw)
    for t in traces:
        w.add(t)
    return w.close()


@pytest.mark.parametrize("layout", [NETDIFFUSION, NETDIFFUSION.full, Layout(("eth", "ipv4", "tcp", "udp"), 32)])
def test_real_traces_round_trip_exactly(samples_dir: Path, tmp_path: Path, layout: Layout) -> None:
    traces = _real_traces(samples_dir, layout, shared=25 if layout == NETDIFFUSION else 0)
    doc = _write(tmp_path / "s", traces, shard_packets=500)
    assert len(doc["shards"]) > 1 and doc["format"] == STORE_FORMAT
    src = open_store(tmp_path / "s")
    assert len(src) == len(traces) and src.lengths.tolist() == [len(t) for t in traces]
    assert src.labels == [t.label for t in traces] and src.sources == [t.source for t in traces]
    for a, b in zip(traces, src.read(range(len(src))), strict=True):
        _same(a, b)
    order = np.random.default_rng(0).permutation(len(traces))[:20]
    for i, b in zip(order, src.read(order), strict=True):
        _same(traces[i], b)


def test_real_traffic_is_stored_as_header_bytes_and_8x_smaller(samples_dir: Path, tmp_path: Path) -> None:
    traces = _real_traces(samples_dir, shared=25)
    matrix = np.concatenate([t.matrix for t in traces])
    assert len(pack_rows(matrix, row_plan(NETDIFFUSION)).fb_rows) == 0  # every encoder row is a byte prefix
    _write(tmp_path / "s", traces)
    assert matrix.nbytes / _store_bytes(tmp_path / "s") >= 8


def _generated(rng: np.random.Generator, layout: Layout, n: int) -> np.ndarray:
    """Rows as a generator may give them: random bits, -1 anywhere (some bytes half present), some prefix rows."""
    m = rng.integers(0, 2, (n, layout.width)).astype(np.int8)
    m[rng.random(m.shape) < 0.3] = -1
    m[::3, layout.width // 2:] = -1  # a clean tail: still not a per-block prefix
    m[1::4] = np.where(np.arange(layout.width) < 160, m[1::4].clip(0), -1)  # prefix rows among them
    return m


@pytest.mark.parametrize("layout", [NETDIFFUSION, Layout(("ipv4",), 0, frozenset({"ipv4_ver"})),
                                    Layout(("ipv4", "udp"), 300)])
def test_generated_rows_round_trip_exactly(tmp_path: Path, layout: Layout) -> None:
    rng = np.random.default_rng(1)
    traces = [Trace(_generated(rng, layout, n), layout, None if i % 2 else np.arange(n) * 7, f"c{i % 3}",
                    None if i == 2 else f"cap{i}", meta={"i": i})
              for i, n in enumerate([1, 5, 40, 0, 17, 300])]
    _write(tmp_path / "s", traces, shard_packets=50)
    src = open_store(tmp_path / "s")
    for a, b in zip(traces, src.read(range(len(src))), strict=True):
        _same(a, b)


def test_values_outside_nprint_are_refused(tmp_path: Path) -> None:
    m = np.zeros((2, NETDIFFUSION.width), np.int8)
    m[1, 5] = 2
    with pytest.raises(ValueError, match="-1, 0 or 1"), StoreWriter(tmp_path / "s", NETDIFFUSION) as w:
        w.add(Trace(m, NETDIFFUSION, label="x"))
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").iterdir())


def test_empty_store_is_refused(tmp_path: Path) -> None:
    w = StoreWriter(tmp_path / "s", NETDIFFUSION)
    with pytest.raises(InputError, match="empty trace store"):
        w.close()
    assert not (tmp_path / "s" / INDEX_JSON).exists()


def test_failed_write_leaves_nothing(samples_dir: Path, tmp_path: Path) -> None:
    traces = _real_traces(samples_dir)
    _write(tmp_path / "s", traces[:3])  # a store was here: a failed rewrite must not leave it half replaced
    with pytest.raises(RuntimeError), StoreWriter(tmp_path / "s", NETDIFFUSION, shard_packets=500) as w:
        for t in traces:
            w.add(t)
        assert list((tmp_path / "s").glob("shard-*"))  # shards were written as it went
        raise RuntimeError("interrupted")
    assert not list((tmp_path / "s").iterdir())
    with pytest.raises(InputError, match="not a trace store"):
        open_store(tmp_path / "s")


@pytest.fixture
def store(samples_dir: Path, tmp_path: Path) -> tuple[Path, list[Trace], dict]:
    traces = _real_traces(samples_dir)
    return tmp_path / "s", traces, _write(tmp_path / "s", traces, shard_packets=400)


def _read_all(root: Path) -> None:
    src = open_store(root)
    src.read(range(len(src)))


def test_truncated_shard_is_named(store: tuple[Path, list[Trace], dict]) -> None:
    root, _, doc = store
    shard = root / doc["shards"][1]["name"]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(InputError, match="corrupt") as err:
        _read_all(root)
    assert err.value.path == str(shard)


def test_altered_shard_is_named(store: tuple[Path, list[Trace], dict]) -> None:
    root, _, doc = store
    shard = root / doc["shards"][0]["name"]
    blob = bytearray(shard.read_bytes())
    blob[-50] ^= 0xFF
    shard.write_bytes(bytes(blob))
    with pytest.raises(InputError, match="sha256 differs") as err:
        _read_all(root)
    assert err.value.path == str(shard)


def test_missing_shard_is_named(store: tuple[Path, list[Trace], dict]) -> None:
    root, _, doc = store
    (root / doc["shards"][-1]["name"]).unlink()
    with pytest.raises(InputError, match="missing") as err:
        _read_all(root)
    assert err.value.path == str(root / doc["shards"][-1]["name"])


def test_wrong_format_version_is_refused(store: tuple[Path, list[Trace], dict]) -> None:
    root, _, doc = store
    (root / INDEX_JSON).write_text(json.dumps({**doc, "format": "netdiff-trace-store/9"}))
    with pytest.raises(InputError, match="unknown trace store format 'netdiff-trace-store/9'"):
        open_store(root)


def test_shard_of_another_format_is_refused(store: tuple[Path, list[Trace], dict]) -> None:
    root, _, doc = store
    shard = root / doc["shards"][0]["name"]
    shard.write_bytes(b"PK\x03\x04" + shard.read_bytes()[4:])
    with pytest.raises(InputError, match="not a netdiff trace store file"):
        _read_all(root)


def test_fingerprint_follows_content(samples_dir: Path, tmp_path: Path) -> None:
    traces = _real_traces(samples_dir)
    _write(tmp_path / "a", traces)
    _write(tmp_path / "b", traces)
    traces[0].label = "other"
    _write(tmp_path / "c", traces)
    fa, fb, fc = (open_store(tmp_path / n).fingerprint for n in "abc")
    assert fa == fb != fc
    both = open_store([tmp_path / "a", tmp_path / "c"])
    assert len(both) == 2 * len(traces) and both.fingerprint not in (fa, fc)
    _same(traces[0], both.read([len(traces)])[0])


def test_s3_store_streams_through_a_bounded_cache(s3_env, samples_dir: Path, tmp_path: Path) -> None:
    traces = _real_traces(samples_dir)
    bucket = s3_env.make_bucket()
    uri = f"s3://{bucket}/stores/one"
    _write(uri, traces, shard_packets=1500)
    cache = tmp_path / "cache"
    src = open_store(uri, cache_dir=cache, cache_bytes=1)  # at most one shard on local disk at a time
    assert len(src) == len(traces) and src.labels == [t.label for t in traces]
    biggest = 0
    for i in range(len(src)):
        _same(traces[i], src.read([i])[0])
        biggest = max(biggest, sum(1 for p in cache.rglob("shard-*")))
    assert biggest == 1
    assert src.fingerprint == open_store(uri).fingerprint


def test_s3_store_errors_are_named(s3_env, samples_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_env.make_bucket()
    with pytest.raises(InputError, match=r"not a trace store|no such"):
        open_store(f"s3://{bucket}/nothing-here")
    _write(f"s3://{bucket}/s", _real_traces(samples_dir)[:2])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(InputError, match="credentials") as err:
        open_store(f"s3://{bucket}/s")
    assert f"s3://{bucket}/s" in err.value.path


def _long_folder(tmp_path: Path) -> tuple[Path, list]:
    folder = tmp_path / "cls"
    folder.mkdir()
    return folder, merge(folder / "mixed_01.pcap", PARTS)


def test_encode_cli_writes_a_store_by_default_for_flow_traces(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder, packets = _long_folder(tmp_path)
    out = tmp_path / "out"
    assert main(["encode", str(folder), "-o", str(out), "-q", "--traces", "flow", "--max-packets", "8"]) == 0
    assert "trace store:" in capsys.readouterr().err and not list(out.rglob("*.npz"))
    src = open_store(out)
    want = {tuple(p.ts for p in ps[:8]) for ps in flows(packets).values()}
    got = src.read(range(len(src)))
    assert {tuple(t.ts_ns.tolist()) for t in got} == want and set(src.labels) == {"mixed"}
    assert all(t.meta["trace"].split()[0] in ("tcp", "udp", "icmp") for t in got)
    assert main(["encode", str(folder), "-o", str(tmp_path / "npz"), "-q", "--traces", "flow", "--max-packets", "8",
                 "--format", "npz"]) == 0
    from netdiff_lib.trace import load_trace

    by_ts = {tuple(t.ts_ns.tolist()): t for t in got}
    for f in (tmp_path / "npz").rglob("*.npz"):
        t = load_trace(f)
        assert np.array_equal(by_ts[tuple(t.ts_ns.tolist())].matrix, t.matrix)


def test_encode_cli_store_for_whole_files_and_help(samples_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["encode", str(samples_dir / "dns"), "-o", str(out), "-q", "--format", "store"]) == 0
    src = open_store(out)
    assert len(src) == len(list((samples_dir / "dns").glob("*.pcap"))) and set(src.labels) == {"dns"}
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    assert "store otherwise" in " ".join(capsys.readouterr().out.split())


def test_pipeline_encode_writes_split_stores_that_train_and_evaluate_read(tmp_path: Path) -> None:
    from netdiff_lib.encoded import load_split
    from netdiff_lib.evaluate.sources import encoded_trace_set
    from netdiff_lib.stages import encode_shard

    root = tmp_path / "in"
    for label, parts in (("a", PARTS[:2]), ("b", PARTS[2:])):
        (root / label).mkdir(parents=True)
        for i in range(2):
            merge(root / label / f"{label}_{i}.pcap", parts)
    encode_shard(str(root), tmp_path / "enc", {"index": 0, "count": 1}, test_fraction=0.5, seed=0, max_packets=64,
                 traces={"traces": "flow", "flow_timeout": 60.0})
    store = open_store(tmp_path / "enc" / "nprint" / "train")
    data = load_split([tmp_path / "enc"], "train")
    assert data.fingerprint == store.fingerprint and data.max_packets == 64
    assert data.captures == len(set(store.sources)) == 2
    test = encoded_trace_set("real_test", [tmp_path / "enc"], "test")
    want = open_store(tmp_path / "enc" / "nprint" / "test")
    assert len(test.traces) == len(want) and test.labels == want.labels
    assert all(f.startswith("test/") for f, _ in test.files)


def test_train_reads_a_trace_store(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    folder, _ = _long_folder(tmp_path)
    assert main(["encode", str(folder), "-o", str(tmp_path / "store"), "-q", "--traces", "flow"]) == 0
    model = tmp_path / "model"
    assert main(["train", "--data", str(tmp_path / "store"), "-o", str(model), "--config", "tiny", "--steps", "2",
                 "-q", "--gpus", "1"]) == 0
    cards = " ".join(p.read_text() for p in model.glob("*.json"))
    assert open_store(tmp_path / "store").fingerprint in cards


def test_train_names_a_corrupt_store_shard(store: tuple[Path, list[Trace], dict], tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    root, _, doc = store
    shard = root / doc["shards"][0]["name"]
    shard.write_bytes(shard.read_bytes()[:1000])
    assert main(["train", "--data", str(root), "-o", str(tmp_path / "m"), "--config", "tiny", "-q"]) == 2
    err = capsys.readouterr().err
    assert str(shard) in err and "Traceback" not in err and not (tmp_path / "m").exists()


def test_a_pickled_source_reads_in_another_process(store: tuple[Path, list[Trace], dict]) -> None:
    import pickle
    import subprocess
    import sys

    root, traces, _ = store
    src = open_store(root)
    src.read([0])
    blob = pickle.dumps(src)
    assert len(blob) < 100_000  # the index only, no loaded shard
    code = ("import pickle, sys; s = pickle.loads(sys.stdin.buffer.read()); t = s.read([len(s) - 1])[0]; "
            "print(t.label, len(t))")
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, check=True)
    assert out.stdout.decode().split() == [traces[-1].label, str(len(traces[-1]))]


def _cut_stores(path: Path, root: Path, layout: Layout, mode: str, parse: str = "netdiff") -> tuple[dict, dict, list]:
    """``path`` cut into traces and written into two stores: from the matrices (as every trace is) and from the
    builders' packed header bytes (what ``netdiff encode --format store`` writes)."""
    from netdiff_lib.segment import parse_traces, segment_capture

    docs, got = [], []
    for packed in (False, True):
        traces = list(segment_capture(path, parse_traces(mode), layout, max_packets=5, label="x", mode=parse,
                                      packed=packed, batch_size=997))
        docs.append(_write(root / str(packed), traces, shard_packets=300))
        got.append(traces)
    return docs[0], docs[1], got


@pytest.mark.parametrize("mode", ["flow", "host+window:20", "file"])
@pytest.mark.parametrize("layout", [NETDIFFUSION, NETDIFFUSION.full, Layout(("eth", "ipv4", "tcp", "udp"), 32),
                                    Layout(("ipv6", "tcp", "icmp"), 8)])
def test_store_from_header_bytes_is_byte_identical(tmp_path: Path, layout: Layout, mode: str) -> None:
    path = tmp_path / "long.pcap"
    merge(path, PARTS)
    plain, direct, (traces, packed) = _cut_stores(path, tmp_path, layout, mode)
    assert direct["fingerprint"] == plain["fingerprint"] and direct["shards"] == plain["shards"]
    assert type(packed[0]).__name__ == "PackedTrace" and len(packed) == len(traces) > 0
    for a, b in zip(traces, packed, strict=True):
        assert np.array_equal(a.matrix, b.matrix) and np.array_equal(a.ts_ns, b.ts_ns) and a.meta == b.meta


@pytest.mark.parametrize("pack_rows", [16384, 6])
@pytest.mark.parametrize("roll", [{"shard_packets": 20}, {"shard_bytes": 1500}, {"shard_packets": 1}, {}])
@pytest.mark.parametrize("mode", ["flow", "host+window:20", "window:7.5"])
def test_store_from_batches_of_traces_is_byte_identical(tmp_path: Path, mode: str, roll: dict, pack_rows: int,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch's traces handed over at once (PackedTraces, what ``netdiff encode --format store`` does) give
    the store of one trace at a time: same shards (rolled at a packet or byte size, checked where rows are packed:
    every ``pack_rows``), same fingerprint."""
    from netdiff_lib.segment import parse_traces, segment_capture
    from netdiff_lib.store import writer

    monkeypatch.setattr(writer, "PACK_ROWS", pack_rows)
    path = tmp_path / "long.pcap"
    merge(path, PARTS)
    kw = {"max_packets": 50, "label": "x", "packed": True, "batch_size": 97}
    one = list(segment_capture(path, parse_traces(mode), NETDIFFUSION, **kw))
    batches = list(segment_capture(path, parse_traces(mode), NETDIFFUSION, batched=True, **kw))
    assert {type(b).__name__ for b in batches} == {"PackedTraces"}
    assert mode != "flow" or max(len(b) for b in batches) > 1
    assert sum(len(b) for b in batches) == len(one)
    want = _write(tmp_path / "one", one, **roll)
    w = StoreWriter(tmp_path / "batches", NETDIFFUSION, **roll)
    w.add(one[0])  # a PackedTrace first, then batches: the writer takes both
    for b in batches:
        w.add(b.part(1, len(b)) if b is batches[0] else b)
    got = w.close()
    assert got["shards"] == want["shards"] and got["fingerprint"] == want["fingerprint"]
    rolls = "shard_packets" in roll or ("shard_bytes" in roll and pack_rows < 100)  # bytes: counted when packed
    assert (len(want["shards"]) > 1) == rolls


@pytest.mark.skipif(not (SHARED / "iot-sentinel").is_dir(), reason="/work/shared/data/iot-sentinel is not here")
@pytest.mark.parametrize("parse", ["netdiff", "nprint"])
def test_store_from_header_bytes_is_byte_identical_on_real_captures(tmp_path: Path, parse: str) -> None:
    """802.11, snaplen cuts and odd frames of real captures (the nPrint parsing's wireless quirk included)."""
    for i, f in enumerate(sorted((SHARED / "iot-sentinel").rglob("*.pcap"))[::40]):
        for layout in (NETDIFFUSION, Layout(("radiotap", "wlan", "ipv4", "tcp", "udp"), 16)):
            plain, direct, _ = _cut_stores(f, tmp_path / f"{i}-{len(layout.blocks)}", layout, "flow", parse)
            assert direct["fingerprint"] == plain["fingerprint"], f
