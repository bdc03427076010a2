"""Training from a trace source: ``TrainingData(dataset=...)``, the bounded fit sample, streamed batches (the same
steps as packed ones, one or two ranks), and ``ArrayFolderSource`` (a folder of trace array files read lazily)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sample_sets import link_samples

from netdiff_lib import checkpoint
from netdiff_lib.config import PrivacyConfig, tiny
from netdiff_lib.encoded import from_captures
from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.models import Sampling, get_backend
from netdiff_lib.models.base import TrainingData, trace_fingerprint
from netdiff_lib.models.native.data import BucketPlan, positions, prepare_data
from netdiff_lib.models.native.privacy import split_holdout
from netdiff_lib.models.native.train import train
from netdiff_lib.schema import MAX_PACKETS
from netdiff_lib.trace import Trace, save_trace
from netdiff_lib.tracesource import ArrayFolderSource, ListSource, sample_per_class

torch.set_num_threads(1)
CLASSES = ("dns", "http", "icmp")


class CountingSource(ArrayFolderSource):
    """An array folder that counts the traces it reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads = 0

    def read(self, indices):  # type: ignore[no-untyped-def]
        self.reads += len(indices)
        return super().read(indices)


@pytest.fixture(scope="module")
def small_set(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainingData:
    data = link_samples(samples_dir, tmp_path_factory.mktemp("data"), CLASSES, 3)
    return from_captures(str(data), MAX_PACKETS)


@pytest.fixture(scope="module")
def folder(small_set: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same traces as one array file each, under ``<label>/``."""
    root = tmp_path_factory.mktemp("arrays")
    for i, t in enumerate(small_set.traces):
        save_trace(root / str(t.label) / f"{i:03d}.npz", t)
    return root


def _cfg(steps: int = 4, *settings: str):
    return tiny().with_settings(list(settings)).with_overrides(steps=steps, checkpoint_every=2, log_every=1,
                                                               warmup_steps=2)


def _curve(folder: Path) -> list[dict]:
    ck = checkpoint.load(folder / "checkpoints")
    return [{k: v for k, v in h.items() if k != "elapsed_s"} for h in ck.meta["loop"]["history"]]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _card(folder: Path) -> dict:
    return json.loads((folder / "model_card.json").read_text())


def test_a_dataset_is_read_only_for_its_fingerprint_and_matches_the_traces(small_set: TrainingData,
                                                                         folder: Path) -> None:
    src = CountingSource(folder)
    assert sorted(set(src.labels)) == list(CLASSES) and src.lengths.sum() == sum(len(t) for t in small_set.traces)
    given = TrainingData(dataset=src, source=str(folder), max_packets=MAX_PACKETS, fingerprint="recorded")
    assert src.reads == 0 and given.traces == [] and given.labels == list(CLASSES)
    assert given.captures == len(small_set.traces)  # one source capture per trace here
    computed = TrainingData(dataset=src, source=str(folder), max_packets=MAX_PACKETS)
    assert src.reads == len(src) and computed.fingerprint == small_set.fingerprint  # streamed, same value
    assert trace_fingerprint(iter(small_set.traces)) == small_set.fingerprint
    whole = computed.in_memory()  # what sd15 trains on
    assert [t.matrix.tobytes() for t in whole.traces] == [t.matrix.tobytes() for t in small_set.traces]
    assert whole.fingerprint == small_set.fingerprint
    with pytest.raises(ValueError, match="not both"):
        TrainingData(small_set.traces, dataset=src)
    src.fingerprint, before = "recorded-by-the-store", src.reads  # a source's own fingerprint is taken, nothing read
    assert TrainingData(dataset=src, source="s").fingerprint == "recorded-by-the-store" and src.reads == before
    split = split_holdout(src, PrivacyConfig(holdout=0.34, min_holdout=1), seed=0)  # by metadata: nothing read
    assert src.reads == before and len(split.train_idx) + len(split.held_idx) == len(src)
    assert not {src.sources[i] for i in split.held_idx} & {src.sources[i] for i in split.train_idx}


def test_encoded_training_split_stays_on_disk_and_is_the_same_data(small_set: TrainingData, tmp_path: Path) -> None:
    """``load_split`` (the pipeline's train stage) reads the encode outputs' headers only; same fingerprint."""
    from netdiff_lib.encoded import NPRINT, load_split

    for i, t in enumerate(small_set.traces):
        save_trace(tmp_path / NPRINT / "train" / str(t.label) / f"{i:03d}.npz", t)
    data = load_split([tmp_path], "train", payloads=False)
    assert data.traces == [] and isinstance(data.dataset, ArrayFolderSource)
    assert data.fingerprint == small_set.fingerprint and data.captures == len(small_set.traces)
    assert data.max_packets == max(int(t.meta.get("max_packets", len(t))) for t in small_set.traces)
    assert data.labels == list(CLASSES)


def test_array_folder_source_needs_files_and_takes_labels_from_folders(tmp_path: Path,
                                                                       small_set: TrainingData) -> None:
    with pytest.raises(InputError, match="no trace array files"):
        ArrayFolderSource(tmp_path)
    t = small_set.traces[0]
    save_trace(tmp_path / "mylabel" / "a.npz", Trace(t.matrix, t.layout, t.ts_ns, None, None))
    src = ArrayFolderSource(tmp_path)
    assert src.labels == ["mylabel"] and src.sources == ["mylabel/a.npz"] and src.read([0])[0].label == "mylabel"
    (tmp_path / "mylabel" / "b.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match=r"b\.npz"):
        ArrayFolderSource(tmp_path)


def test_the_fit_sample_is_bounded_per_class_and_whole_for_small_classes(small_set: TrainingData) -> None:
    labels = [str(t.label) for t in small_set.traces]
    assert sample_per_class(labels, 1000, 0).tolist() == list(range(len(labels)))  # small: all, in order
    two = sample_per_class(labels, 2, 0)
    assert sorted(np.unique(np.array(labels)[two], return_counts=True)[1].tolist()) == [2, 2, 2]
    assert two.tolist() == sample_per_class(labels, 2, 0).tolist() != sample_per_class(labels, 2, 1).tolist()
    prep = prepare_data(_cfg(4, "data.sample_per_class=2"), small_set)
    assert prep.data_info["fit_traces"] == 6 and prep.data_info["traces"] == len(small_set.traces)
    # the lengths the generator draws from are every trace's, from the source's metadata
    assert sum(prep.stats["traces"].values()) == len(small_set.traces)
    full = prepare_data(_cfg(), small_set)
    assert full.data_info["fit_traces"] == len(small_set.traces) and not full.data_info["streamed"]


def test_streamed_training_takes_the_packed_runs_steps(small_set: TrainingData, folder: Path,
                                                       tmp_path: Path) -> None:
    packed, streamed, lazy = tmp_path / "packed", tmp_path / "streamed", tmp_path / "lazy"
    train(_cfg(), small_set, str(packed), progress=False)
    train(_cfg(4, "data.stream=on", "data.workers=0"), small_set, str(streamed), progress=False)
    from_disk = TrainingData(dataset=ArrayFolderSource(folder), source=str(folder), max_packets=MAX_PACKETS,
                             fingerprint=small_set.fingerprint)
    train(_cfg(4, "data.stream=auto", "data.stream_packets=0", "data.workers=1"), from_disk, str(lazy),
          progress=False)  # auto: more packets than the threshold
    assert not _card(packed)["data"]["streamed"] and _card(streamed)["data"]["streamed"]
    assert _card(lazy)["data"]["streamed"]
    assert _curve(packed) == _curve(streamed) == _curve(lazy) and len(_curve(packed)) == 4
    assert _same_weights(packed, streamed) and _same_weights(packed, lazy)


def test_streamed_training_writes_a_model_that_loads_generates_and_resumes(small_set: TrainingData,
                                                                          tmp_path: Path) -> None:
    data = TrainingData(dataset=ListSource(small_set.traces), source="list", max_packets=MAX_PACKETS)
    cfg = _cfg(4, "data.stream=on", "data.workers=1")
    whole, sliced = tmp_path / "whole", tmp_path / "sliced"
    train(cfg, data, str(whole), progress=False)
    train(cfg, data, str(sliced), progress=False, until_step=3)
    train(cfg, data, str(sliced), progress=False, resume=True)
    assert _curve(whole) == _curve(sliced) and _same_weights(whole, sliced)
    model = get_backend("native").load(str(whole))
    out = model.generate(1, Sampling(steps=2, progress=False))
    assert sorted(g.label for g in out) == list(CLASSES) and all(len(g.matrix) for g in out)
    with pytest.raises(ConfigError, match="sample_per_class"):
        train(_cfg(6, "data.stream=on", "data.sample_per_class=2"), data, str(sliced), progress=False, resume=True)


def test_a_bad_trace_file_met_while_streaming_is_an_input_error_naming_it(small_set: TrainingData, folder: Path,
                                                                          tmp_path: Path) -> None:
    copy = tmp_path / "arrays"
    shutil.copytree(folder, copy)
    src = ArrayFolderSource(copy)  # the headers are read here; the bad file is found when its batch is read
    fit = set(sample_per_class(src.labels, 1, 0).tolist())
    bad = next(i for i in range(len(src)) if i not in fit)
    src.paths[bad].write_bytes(src.paths[bad].read_bytes()[:200])
    data = TrainingData(dataset=src, source=str(copy), max_packets=MAX_PACKETS, fingerprint="given")
    with pytest.raises(InputError, match=src.paths[bad].name):
        train(_cfg(4, "data.stream=on", "data.workers=1", "data.sample_per_class=1"), data, str(tmp_path / "m"),
              progress=False)
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_privacy_gate_on_a_source_splits_by_metadata_and_streams(small_set: TrainingData, tmp_path: Path) -> None:
    gate = ("privacy.mode=on", "privacy.every=2", "privacy.samples_per_class=2", "privacy.min_holdout=2")
    packed, streamed = tmp_path / "packed", tmp_path / "streamed"
    train(_cfg(4, *gate), small_set, str(packed), progress=False)
    train(_cfg(4, *gate, "data.stream=on", "data.workers=0"), small_set, str(streamed), progress=False)
    gp, gs = (_card(f)["training"]["privacy_gate"] for f in (packed, streamed))
    assert gp == gs and gp["holdout"]["traces"] >= 2 and _same_weights(packed, streamed)


def test_each_rank_takes_its_own_batches_of_the_plan() -> None:
    lengths = np.random.default_rng(0).integers(1, 64, 300)
    plan = BucketPlan(lengths, (16, 32, 64), 256, seed=3, world=2)
    per = plan.batches_per_epoch()
    ranks = [list(zip(range(2 * per), positions(plan, r, 0, 0), strict=False)) for r in (0, 1)]
    for r, items in enumerate(ranks):
        assert [(e, b) for _, (e, b, _, _) in items] == [(k // per, k % per) for k in range(2 * per)]
        for _, (e, b, bucket, idx) in items:
            want = plan.epoch(e)[b * 2 + r]
            assert bucket == want[0] and idx.tolist() == want[1].tolist()
    resumed = [(e, b) for (e, b, _, _), _ in zip(positions(plan, 1, 0, per), range(3), strict=False)]
    assert resumed == [(1, 0), (1, 1), (1, 2)]  # a position past an epoch's end starts the next


@pytest.mark.slow
def test_two_cpu_processes_streaming_train_the_packed_model(small_set: TrainingData, samples_dir: Path,
                                                            tmp_path: Path) -> None:
    data = link_samples(samples_dir, tmp_path / "data", CLASSES, 3)
    runs = {}
    for name, extra in (("packed", []), ("streamed", ["--set", "data.stream=on", "--set", "data.workers=1"])):
        out = tmp_path / name
        cmd = [sys.executable, "-m", "netdiff_lib.cli", "train", "--data", str(data), "-o", str(out), "--config",
               "tiny", "--steps", "4", "-q", "--workers", "1", "--cpu-processes", "2", *extra]
        runs[name] = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert runs[name].returncode == 0, runs[name].stderr[-2000:]
    assert _card(tmp_path / "streamed")["training"]["processes"] == 2
    assert _same_weights(tmp_path / "packed", tmp_path / "streamed")
