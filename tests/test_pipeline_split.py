"""The pipeline cuts a big capture across its encode pods (``split_bytes``): the listing plans byte ranges, each
encode shard emits the traces that start in its ranges, and together they give one pass's traces; also through
kfp.local with the real list and encode components. (No ``from __future__ import annotations``: KFP reads the
pipeline function's annotations as types.)"""

from pathlib import Path

import pytest
from test_segment_fast import _long_capture

from netdiff_lib import stages
from netdiff_lib.encoded import iter_encoded
from netdiff_lib.schema import NETDIFFUSION
from netdiff_lib.segment import parse_traces, segment_capture

SPLIT = 300_000
TRACES = {"traces": "flow", "flow_timeout": 3.0}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("split-in")
    for n, label in enumerate(("a", "a", "b", "b")):
        (root / label).mkdir(exist_ok=True)
        _long_capture(root / label / f"{label}_{n}.pcap", seed=10 + n, parts=30)
    return root


def _one_pass(root: Path, plan: stages.data.InputPlan) -> list[tuple]:
    out = []
    for cap in plan.captures:
        if cap.part == 0:
            out += [_key(t) for t in segment_capture(cap.uri, parse_traces("flow", 3.0), NETDIFFUSION,
                                                     max_packets=1024, label=cap.label, source=cap.dest)]
    return sorted(out)


def _key(t: object) -> tuple:
    return t.label, t.source, t.meta["trace"], tuple(t.ts_ns.tolist())


def _encoded(folders: list[Path]) -> list[tuple]:
    """Every trace the encode outputs hold (one trace store per split and pod), whatever their layout."""
    return sorted(_key(t) for split in ("train", "test") for _, t in iter_encoded(folders, split))


def test_listing_cuts_big_captures_and_shards_add_up(inputs: Path, tmp_path: Path) -> None:
    items, meta = stages.list_inputs(str(inputs), tmp_path / "m.json", shards=3, test_fraction=0.5, seed=0,
                                     split_bytes=SPLIT, traces="flow")
    plan = stages.plan_inputs(str(inputs), 3, 0.5, 0, SPLIT)
    assert meta["shards"] == len(items) == 3 and all(c.parts >= 2 for c in plan.captures)
    assert stages.plan_inputs(str(inputs), 3, 0.5, 0, 0).captures[0].parts == 1
    assert stages.list_inputs(str(inputs), tmp_path / "f.json", shards=3, test_fraction=0.5, seed=0,
                              split_bytes=SPLIT, traces="file")[1]["captures"] == 4  # whole files: no cut
    outs = [tmp_path / f"enc-{i}" for i in range(len(items))]
    for item, out in zip(items, outs, strict=True):
        stages.encode_shard(str(inputs), out, item, test_fraction=0.5, seed=0, max_packets=1024, traces=TRACES,
                            split_bytes=SPLIT)
    assert _encoded(outs) == _one_pass(inputs, plan)
    assert not list(tmp_path.glob("enc-*/nprint/**/*.npz"))  # cut traces go into trace stores
    assert len(list(tmp_path.glob("enc-*/payloads/**/*.npz"))) == 4  # one payload file per capture


@pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")
def test_kfp_local_run_splits_a_capture_across_encode_pods(inputs: Path, tmp_path: Path) -> None:
    kfp = pytest.importorskip("kfp")
    from kfp import dsl, local

    from components.encode import encode
    from components.list_inputs import list_inputs
    from netdiff_lib.kfp_local import _subprocess_env

    @dsl.pipeline(name="split-encode")
    def split_encode(input_uri: str, split_bytes: int) -> None:
        listing = list_inputs(input_uri=input_uri, output_uri="", shards=2, test_fraction=0.5, seed=0,
                              s3_endpoint="", traces="flow", split_bytes=split_bytes)
        with dsl.ParallelFor(listing.outputs["Output"]) as shard:
            encode(input_uri=input_uri, shard=shard, test_fraction=0.5, seed=0, max_packets=1024, s3_endpoint="",
                   traces="flow", flow_timeout=3.0, local_net="", labels_uri="", labels_tz="auto",
                   unlabelled="drop", labels_keep_going=False, split_bytes=split_bytes)

    assert kfp.__version__
    root = tmp_path / "artifacts"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    with _subprocess_env():
        split_encode(input_uri=str(inputs), split_bytes=SPLIT)
    shards = sorted({p.parent for p in root.rglob("shard.json")})
    assert len(shards) == 2
    plan = stages.plan_inputs(str(inputs), 2, 0.5, 0, SPLIT)
    assert max(c.parts for c in plan.captures) >= 2
    assert _encoded(shards) == _one_pass(inputs, plan)
