"""The pipeline's data path: the stages after encode read the encode step's outputs, never a capture.

The real stages run in order on a copy of some sample captures; the copy is deleted right after encode, so
train, generate, reconstruct and evaluate can only succeed on what encode wrote."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from netdiff_lib import stages

pytest.importorskip("torch")
LABELS = ("dns", "icmp")


def test_no_capture_is_read_after_encode(samples_dir: Path, tmp_path: Path) -> None:
    captures = tmp_path / "captures"
    for label in LABELS:
        (captures / label).mkdir(parents=True)
        for pcap in sorted((samples_dir / label).glob("*.pcap"))[:5]:
            shutil.copy(pcap, captures / label / pcap.name)
    items, _ = stages.list_inputs(str(captures), tmp_path / "manifest.json", shards=2, test_fraction=0.2, seed=0)
    enc = [str(tmp_path / f"encode-{i}") for i in range(len(items))]
    for item, out in zip(items, enc, strict=True):
        stages.encode_shard(str(captures), out, item, test_fraction=0.2, seed=0, max_packets=48)
    shutil.rmtree(captures)  # from here on, a stage that opened a capture would fail

    meta = stages.train_model(enc, tmp_path / "model", model_uri=str(tmp_path / "model-uri"), backend="native",
                              config="tiny", steps=3, seed=0, processes=1)
    card = json.loads((tmp_path / "model" / "model_card.json").read_text())
    assert meta["steps"] == 3 and card["data"]["captures"] == 8 and card["data"]["encoded_max_packets"] == 48
    assert (tmp_path / "model" / "payloads.json").is_file()  # learned from encode's payload records
    gen_items, gen = stages.generate_shards(tmp_path / "model", tmp_path / "gen", per_class=1, seed=0, shards=1,
                                            steps=2, guidance=1.5, timing="empirical", device="cpu")
    assert gen["traces"] == 2 and gen["timing"] == "empirical"
    rep = stages.reconstruct_shard(tmp_path / "gen", gen_items[0], tmp_path / "pcaps")
    assert rep["traces"] == 2
    result = stages.evaluate_run(enc, [str(tmp_path / "pcaps")], tmp_path / "report", seed=0)
    assert set(result["summary"]) == {"reference", "synthetic"}
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["inputs"]["real_train"]["traces"] == 8 and report["inputs"]["real_test"]["traces"] == 2
    assert max(report["inputs"]["real_train"]["classes"].values()) == 4
    reference = report["compliance"]["reference"]  # the validator's reports made by encode
    assert reference["available"] and reference["all"]["files"] == 2 and not reference["errors"]
    assert reference["all"]["checksum_only"] == reference["all"]["failed"]  # loopback: offloaded checksums only
    if importlib.util.find_spec("nfstream"):  # encode metered the captures' flows
        assert report["flows"]["available"], report["flows"]
        real = report["flows"]["sets"]["real_test"]
        assert real["all"]["traces"] == 2 and not real["failed"] and real["all"]["tcp_udp_flows"] > 0
        assert result["summary"]["reference"]["flow_one_packet_share"] == 0.0  # dig's replies join their queries
    assert {k: v["uri"] for k, v in report["inputs"].items()} == {  # the user's folder, no temporary one
        "real_train": f"train split of {captures}", "real_test": f"test split of {captures}",
        "synthetic": "the run's reconstructed pcaps"}
