"""Tests of ``netdiff_lib.dataset``: discovery and labelling (local and S3), the class map, and splits."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from netdiff_lib import storage
from netdiff_lib.dataset import (
    CLASS_MAP_FILE,
    Capture,
    ClassMap,
    UnknownLabelError,
    discover,
    label_from_name,
    read_labels_csv,
    split_captures,
)
from netdiff_lib.errors import ConfigError, InputError


def _touch(root: Path, *rels: str) -> Path:
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rel.encode())
    return root


def _labels(captures: list[Capture], root: str | Path) -> dict[str, str]:
    return {storage.relative(c.uri, root): c.label for c in captures}


FLAT = ("netflix_01.pcap", "netflix_02.pcap", "youtube-1.pcapng", "youtube-12.PCAP", "zoom.cap", "notes.txt",
        ".netflix_03.pcap")
NESTED = ("Aria/Setup-A-1-STA.pcap", "Aria/Setup-A-2-STA.pcap", "HueBridge/Setup-A-1-STA.pcap",
          "HueBridge/day2/Setup-B-1-STA.pcapng", "HueBridge/readme.md")


def test_label_from_name() -> None:
    cases = {"netflix_01.pcap": "netflix", "youtube-3.pcapng": "youtube", "zoom.cap": "zoom",
             "amazon_prime_12.PCAP": "amazon_prime", "Setup-C-1-STA.pcap": "Setup-C-1-STA", "01.pcap": "01",
             "netflix_01_02.pcap": "netflix_01", "teams_7.pcap.pcap": "teams_7.pcap", "dir/meet_2.pcap": "meet",
             "x.tar.gz": "x.tar"}
    assert {name: label_from_name(name) for name in cases} == cases


def test_prefix_labels_from_a_flat_folder(tmp_path: Path) -> None:
    caps = discover(_touch(tmp_path, *FLAT))
    assert _labels(caps, tmp_path) == {"netflix_01.pcap": "netflix", "netflix_02.pcap": "netflix",
                                       "youtube-1.pcapng": "youtube", "youtube-12.PCAP": "youtube", "zoom.cap": "zoom"}
    assert [c.uri for c in caps] == sorted(c.uri for c in caps)
    assert discover(tmp_path, "prefix") == caps == discover(str(tmp_path))  # deterministic
    assert [c.label for c in discover(f"file://{tmp_path}")] == [c.label for c in caps]
    assert caps[0] == Capture(str(tmp_path / "netflix_01.pcap"), "netflix") and caps[0].name == "netflix_01.pcap"


def test_folder_labels_from_sub_folders(tmp_path: Path) -> None:
    caps = discover(_touch(tmp_path, *NESTED))
    assert _labels(caps, tmp_path) == {"Aria/Setup-A-1-STA.pcap": "Aria", "Aria/Setup-A-2-STA.pcap": "Aria",
                                       "HueBridge/Setup-A-1-STA.pcap": "HueBridge",
                                       "HueBridge/day2/Setup-B-1-STA.pcapng": "HueBridge"}
    assert discover(tmp_path, label_from="folder") == caps
    # an explicit mode overrides the layout
    assert {c.label for c in discover(tmp_path, label_from="prefix")} == {"Setup-A-1-STA", "Setup-A-2-STA",
                                                                          "Setup-B-1-STA"}


def test_csv_labels_by_relative_path_or_unique_name(tmp_path: Path) -> None:
    _touch(tmp_path, *NESTED, "top_1.pcap")
    (tmp_path / "labels.csv").write_text("\ufefffile,label\nAria/Setup-A-1-STA.pcap,speaker\n"
                                         "./Aria/Setup-A-2-STA.pcap,speaker\nHueBridge\\Setup-A-1-STA.pcap,hub\n"
                                         "Setup-B-1-STA.pcapng, hub \ntop_1.pcap,other\n\n")
    caps = discover(tmp_path)  # auto: labels.csv wins over the mixed layout
    assert Counter(c.label for c in caps) == {"speaker": 2, "hub": 2, "other": 1}
    assert discover(tmp_path, label_from="csv") == caps
    # an explicit CSV elsewhere, with the columns in another order
    other = tmp_path.parent / f"{tmp_path.name}-labels.csv"
    other.write_text("label,file\n" + "".join(f"k{i},{c.name if i == 4 else storage.relative(c.uri, tmp_path)}\n"
                                              for i, c in enumerate(caps)))
    assert [c.label for c in discover(tmp_path, labels_csv=other)] == ["k0", "k1", "k2", "k3", "k4"]
    assert read_labels_csv(other)[caps[4].name] == "k4"


def test_csv_errors_name_the_file(tmp_path: Path) -> None:
    _touch(tmp_path, *NESTED)
    csv_path = tmp_path / "labels.csv"
    bad = {"name,class\na,b\n": "header row", "file,label\nAria/Setup-A-1-STA.pcap,\n": "line 2",
           "file,label\nx.pcap,a\nx.pcap,b\n": "two labels",
           "file,label\nSetup-A-1-STA.pcap,a\n": "names 2 captures",
           "file,label\nAria/Setup-A-1-STA.pcap,a\n": "no label for 3 capture"}
    for text, message in bad.items():
        csv_path.write_text(text)
        with pytest.raises(InputError, match=message) as info:
            discover(tmp_path)
        assert info.value.path == str(csv_path)
    csv_path.unlink()
    with pytest.raises(InputError, match=r"labels\.csv"):
        discover(tmp_path, label_from="csv")
    with pytest.raises(ConfigError, match="labels_csv"):
        discover(tmp_path, label_from="folder", labels_csv=csv_path)


def test_csv_row_naming_a_missing_file_is_an_error(tmp_path: Path) -> None:
    """A row whose file is missing would drop that capture, and here its whole class, without a word: an error
    naming labels.csv, the line and the file."""
    _touch(tmp_path, "a_1.pcap", "a_2.pcap", "b_1.pcap")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,label\na_1.pcap,alpha\n\na_2.pcap,alpha\nb_1.pcap,beta\nc_1.pcap,gamma\n")
    with pytest.raises(InputError, match=r"line 6: 'c_1\.pcap': no such file") as info:
        discover(tmp_path)
    assert info.value.path == str(csv_path)
    csv_path.write_text("file,label\na_1.pcap,alpha\na_2.pcap,alpha\nb_1.pcap,beta\n")
    assert Counter(c.label for c in discover(tmp_path)) == {"alpha": 2, "beta": 1}


def test_discovery_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no captures found \(looked for \.pcap, \.pcapng, \.cap") as info:
        discover(tmp_path)
    assert info.value.path == str(tmp_path)
    _touch(tmp_path, "readme.txt", ".hidden.pcap")
    with pytest.raises(InputError, match=re.escape(str(tmp_path))):
        discover(tmp_path)
    with pytest.raises(InputError, match=r"looked for \.dump files"):
        discover(tmp_path, suffixes=".dump")
    with pytest.raises(InputError, match="no such folder"):
        discover(tmp_path / "missing")
    with pytest.raises(ConfigError, match="label_from"):
        discover(tmp_path, label_from="name")
    _touch(tmp_path, "a_1.pcap", "b/c.pcap")
    with pytest.raises(InputError, match="1 of 2 captures are in sub-folders"):
        discover(tmp_path)
    with pytest.raises(InputError, match=r"a_1\.pcap: not in a sub-folder"):
        discover(tmp_path, label_from="folder")
    assert [c.label for c in discover(tmp_path, label_from="prefix")] == ["a", "c"]


def test_discovery_on_an_object_store_prefix(s3_env, tmp_path: Path) -> None:
    bucket = s3_env.make_bucket()
    storage.put_dir(_touch(tmp_path / "nested", *NESTED), f"s3://{bucket}/iot")
    storage.put_dir(_touch(tmp_path / "flat", *FLAT), f"s3://{bucket}/apps")
    for name, prefix in (("nested", f"s3://{bucket}/iot"), ("flat", f"minio://{bucket}/apps/")):
        remote = discover(prefix)
        assert all(c.uri.startswith(prefix.rstrip("/") + "/") for c in remote)
        assert _labels(remote, prefix) == _labels(discover(tmp_path / name), tmp_path / name)
    storage.put(_touch(tmp_path / "csv", "labels.csv").joinpath("labels.csv"), f"s3://{bucket}/iot/labels.csv")
    with pytest.raises(InputError, match=rf"s3://{bucket}/iot/labels.csv: expected a header"):
        discover(f"s3://{bucket}/iot")
    (tmp_path / "csv" / "labels.csv").write_text("file,label\n" + "".join(f"{r},L{i % 2}\n" for i, r in
                                                                          enumerate(sorted(NESTED))))
    storage.put(tmp_path / "csv" / "labels.csv", f"s3://{bucket}/iot/labels.csv")
    assert Counter(c.label for c in discover(f"s3://{bucket}/iot")) == {"L0": 2, "L1": 2}
    with pytest.raises(InputError, match=rf"s3://{bucket}/empty: no captures found"):
        discover(f"s3://{bucket}/empty")


def test_iot_sentinel_layout(shared_dir: Path) -> None:
    root = shared_dir / "data" / "iot-sentinel"
    if not root.is_dir():
        pytest.skip(f"{root} is not available")
    caps = discover(root)
    assert len(caps) == 414
    assert all(Path(c.uri).parent.name == c.label for c in caps)
    cmap = ClassMap.from_captures(caps)
    assert len(cmap) == 31 and list(cmap) == sorted({c.label for c in caps})
    train, test = split_captures(caps, 0.2, seed=1)
    assert len(train) + len(test) == 414 and 0.15 < len(test) / 414 < 0.25
    counts = Counter(c.label for c in caps)
    assert {c.label for c in test} == {label for label, n in counts.items() if n >= 2}


def test_class_map_round_trip(tmp_path: Path) -> None:
    caps = [Capture(f"/d/{lb}_{i}.pcap", lb) for lb in ("zoom", "netflix", "amazon") for i in range(2)]
    cmap = ClassMap.from_captures(caps)
    assert cmap.labels == ("amazon", "netflix", "zoom") and len(cmap) == 3 and "zoom" in cmap
    assert [cmap.index(lb) for lb in cmap] == [0, 1, 2] and cmap.label(2) == "zoom"
    assert cmap.type_name("netflix") == "type-1" and cmap.label_of_type("type-1") == "netflix"
    assert cmap.caption("amazon") == "pixelated network data, type-0"
    path = cmap.save(tmp_path / "model" / CLASS_MAP_FILE)
    data = json.loads(Path(path).read_text())
    assert data["format"] == "netdiff-class-map" and data["classes"][1] == {
        "index": 1, "label": "netflix", "type": "type-1", "caption": "pixelated network data, type-1"}
    loaded = ClassMap.load(path)
    assert loaded == cmap and loaded.source == path
    assert [p.name for p in (tmp_path / "model").iterdir()] == [CLASS_MAP_FILE]
    # a stored order that is not alphabetical is kept (NetDiffusion's README has netflix = type-0)
    custom = ClassMap(("netflix", "amazon"))
    assert ClassMap.load(custom.save(tmp_path / "custom.json")).index("netflix") == 0


def test_class_map_unknown_labels_and_bad_files(tmp_path: Path) -> None:
    path = ClassMap.from_labels(["b", "a"]).save(tmp_path / CLASS_MAP_FILE)
    loaded = ClassMap.load(path)
    with pytest.raises(UnknownLabelError, match=rf"label 'youtube' is not in the class map {path} \(2 classes: a, b"):
        loaded.caption("youtube")
    with pytest.raises(LookupError, match="class index 2"):
        loaded.label(2)
    with pytest.raises(UnknownLabelError, match="type-N"):
        loaded.label_of_type("netflix")
    with pytest.raises(UnknownLabelError, match="class index 5"):
        loaded.label_of_type("type-5")
    bad = {"{": "not valid JSON", "[]": "not a class map", '{"format": "netdiff-class-map", "version": 9}': "version",
           '{"format": "netdiff-class-map", "version": 1, "classes": [{"index": 1, "label": "a"}]}': "0..N-1",
           '{"format": "netdiff-class-map", "version": 1, "classes": [{"index": 0}]}': "bad class list",
           '{"format": "netdiff-class-map", "version": 1, "classes": []}': "at least one label"}
    for text, message in bad.items():
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(InputError, match=message):
            ClassMap.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match="no such class map"):
        ClassMap.load(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="unique"):
        ClassMap(("a", "a"))


def test_class_map_in_the_object_store(s3_env) -> None:
    bucket = s3_env.make_bucket()
    cmap = ClassMap.from_labels(["x", "y"])
    uri = cmap.save(f"s3://{bucket}/models/1/{CLASS_MAP_FILE}")
    assert uri == f"s3://{bucket}/models/1/{CLASS_MAP_FILE}" and ClassMap.load(uri) == cmap


def test_split_is_stratified_deterministic_and_complete() -> None:
    caps = [Capture(f"/d/{lb}_{i:02d}.pcap", lb) for lb, n in (("a", 10), ("b", 2), ("c", 1), ("d", 7))
            for i in range(n)]
    train, test = split_captures(caps, 0.2, seed=0)
    assert sorted(train + test) == sorted(caps) and not set(train) & set(test)
    assert Counter(c.label for c in test) == {"a": 2, "b": 1, "d": 1}  # c has a single capture: training only
    assert train == [c for c in caps if c in train]  # input order kept
    assert split_captures(list(reversed(caps)), 0.2, seed=0)[1] == list(reversed(test))  # order-independent
    assert split_captures(caps, 0.2, seed=0) == (train, test)
    assert any(split_captures(caps, 0.2, seed=s)[1] != test for s in range(1, 6))
    assert Counter(c.label for c in split_captures(caps, 0.9)[1]) == {"a": 9, "b": 1, "d": 6}
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match="test_fraction"):
            split_captures(caps, bad)
