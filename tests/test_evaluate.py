"""Evaluation metrics on inputs with known answers: distances, fields, fidelity, utility, privacy, reports."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from netdiff_lib.dataset import ClassMap
from netdiff_lib.evaluate import evaluate, kfp_metrics
from netdiff_lib.evaluate.compliance import application_section, sample_files, summarise
from netdiff_lib.evaluate.distances import hellinger, jsd, sample_distances, shared_histograms, tvd
from netdiff_lib.evaluate.fidelity import fidelity
from netdiff_lib.evaluate.fields import PROTOCOLS, bin_port, extract_fields, tcp_option_kinds, trace_field_values
from netdiff_lib.evaluate.privacy import dcr, hamming_min, membership_auc, privacy_summary
from netdiff_lib.evaluate.report import html, json_safe, markdown
from netdiff_lib.evaluate.utility import trace_features, utility
from netdiff_lib.schema import BLOCKS, NETDIFFUSION, NETDIFFUSION_FULL, uint_to_bits
from netdiff_lib.trace import Trace

LAYOUT = NETDIFFUSION


def packet_row(layout=LAYOUT, **fields) -> np.ndarray:
    """One nPrint row: the named fields set, other fixed fields of their blocks 0, everything else -1.

    ``<block>_opt`` takes option bytes.
    """
    row = np.full(layout.width, -1, np.int8)
    for block in {name.split("_")[0] for name in fields}:
        for f in BLOCKS[block].fields:
            if f.name in layout.spans and not f.name.endswith("_opt"):
                row[layout.span(f.name).slice] = 0
    for name, value in fields.items():
        span = layout.span(name)
        if name.endswith("_opt"):
            bits = np.unpackbits(np.frombuffer(bytes(value), np.uint8)).astype(np.int8)
            row[span.start : span.start + bits.size] = bits
        else:
            row[span.slice] = uint_to_bits(value, span.bits)
    return row


def tcp_packet(sport=40000, dport=443, ttl=64, flags=0x10, **extra) -> np.ndarray:
    fields = dict(ipv4_ver=4, ipv4_hl=5, ipv4_ttl=ttl, ipv4_proto=6, ipv4_tl=60, tcp_sprt=sport, tcp_dprt=dport,
                  tcp_doff=5, tcp_ackf=(flags >> 4) & 1, tcp_syn=(flags >> 1) & 1)
    return packet_row(**(fields | extra))


def udp_packet(sport=5353, dport=5353, ttl=255, length=100) -> np.ndarray:
    return packet_row(ipv4_ver=4, ipv4_hl=5, ipv4_ttl=ttl, ipv4_proto=17, ipv4_tl=length + 20, udp_sport=sport,
                      udp_dport=dport, udp_len=length)


def make_trace(rows, label, iat_us=1000, start_ns=0) -> Trace:
    rows = np.stack(rows)
    ts = start_ns + np.arange(len(rows), dtype=np.int64) * int(iat_us * 1000)
    return Trace(rows, LAYOUT, ts, label)


def class_traces(n: int, label: str, seed: int, kind: str) -> list[Trace]:
    """``n`` traces of a class: ``web`` (TCP to 443, TTL 64) or ``mdns`` (UDP 5353, TTL 255) with some noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(4, 12))
        if kind == "web":
            rows = [tcp_packet(sport=int(rng.integers(40000, 60000)), ttl=64) for _ in range(k)]
        else:
            rows = [udp_packet(length=int(rng.integers(60, 200))) for _ in range(k)]
        out.append(make_trace(rows, label, iat_us=float(rng.uniform(100, 5000)), start_ns=i * 10**9))
    return out


# ------------------------------------------------------------------------------------------------ distances


def test_identical_samples_have_zero_distance():
    a = np.array([1, 2, 2, 3, 3, 3])
    assert sample_distances(a, a[::-1]) == {"jsd": 0.0, "tvd": 0.0, "hellinger": 0.0}


def test_disjoint_supports_have_distance_one():
    d = sample_distances(np.array([1, 1, 2]), np.array([3, 4]))
    assert d["jsd"] == pytest.approx(1.0) and d["tvd"] == pytest.approx(1.0) and d["hellinger"] == pytest.approx(1.0)


def test_distances_known_values():
    p, q = np.array([1.0, 0.0]), np.array([0.5, 0.5])
    expected_jsd = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert jsd(p, q) == pytest.approx(expected_jsd)
    assert tvd(p, q) == pytest.approx(0.5)
    assert hellinger(p, q) == pytest.approx(math.sqrt(1 - math.sqrt(0.5)))


def test_jsd_matches_scipy_on_random_histograms():
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(1)
    for _ in range(20):
        p, q = rng.random(12) * (rng.random(12) > 0.3), rng.random(12)
        assert jsd(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)


def test_shared_bins_and_empty_side():
    keys, ca, cb = shared_histograms(np.array(["a", "b", "b"], dtype=object), np.array(["c"], dtype=object))
    assert list(keys) == ["a", "b", "c"] and list(ca) == [1, 2, 0] and list(cb) == [0, 0, 1]
    assert all(math.isnan(v) for v in sample_distances(np.array([1]), np.array([], dtype=np.int64)).values())


# ------------------------------------------------------------------------------------------------ fields


def test_fields_decode_hand_built_packets():
    opts = bytes([2, 4, 5, 0xB4, 1, 3, 3, 7, 4, 2, 8, 10] + [0] * 8 + [0, 0, 0, 0])  # MSS NOP WS SACKOK TS EOL
    syn = tcp_packet(sport=50123, dport=80, flags=0x02, tcp_doff=11, tcp_opt=opts, tcp_wsize=64240,
                     ipv4_dfbit=1, ipv4_tos=0x10)
    trace = make_trace([syn, udp_packet(sport=68, dport=67, length=308)], "x", iat_us=500)
    v = trace_field_values(trace)
    assert v["ipv4_ttl"].tolist() == [64, 255]
    assert v["ipv4_tos"].tolist() == [0x10, 0] and v["ipv4_flags"].tolist() == [2, 0]
    assert v["tcp_sprt"].tolist() == [bin_port(50123)] == [49152] and v["tcp_dprt"].tolist() == [80]
    assert v["tcp_flags"].tolist() == [0x02] and v["tcp_doff"].tolist() == [11]
    assert v["tcp_wsize"].tolist() == [64000]
    assert v["tcp_opt_signature"].tolist() == ["2,1,3,4,8,0"]
    assert v["udp_sport"].tolist() == [68] and v["udp_len"].tolist() == [304]
    assert [PROTOCOLS[c] for c in v["protocol_mix"]] == ["ipv4/tcp", "ipv4/udp"]
    assert v["packets_per_trace"].tolist() == [4]  # floor(4 log2 2)
    assert v["log_iat"].tolist() == [26]  # floor(10 log10(501))
    assert v["icmp_type"].size == 0 and v["ipv6_hl"].size == 0


def test_tcp_option_walk_stops_at_announced_length_and_flags_bad_lengths():
    def kinds(opt: bytes, doff: int) -> list[int]:
        bits = np.unpackbits(np.frombuffer(opt.ljust(40, b"\0"), np.uint8)).astype(np.int8)[None]
        return [int(k) for k in tcp_option_kinds(bits, np.array([doff]))[0] if k != -1]

    assert kinds(bytes([1, 1, 8, 10] + [0] * 8), 8) == [1, 1, 8]
    assert kinds(bytes([2, 4, 5, 0xB4, 1, 1, 1, 1]), 6) == [2]  # only 4 option bytes announced
    assert kinds(bytes([2, 1, 0, 0]), 6) == [-2]  # length 1 is malformed
    assert kinds(bytes([3, 9, 1, 0]), 6) == [-2]  # runs past the options
    assert kinds(b"", 5) == []


def test_field_table_per_class_and_bit_probabilities():
    traces = class_traces(3, "web", 0, "web") + class_traces(2, "mdns", 1, "mdns")
    table = extract_fields(traces)
    assert table.classes == ["mdns", "web"]
    assert set(table.get("ipv4_ttl", "web").tolist()) == {64}
    assert set(table.get("ipv4_ttl", "mdns").tolist()) == {255}
    assert table.get("tcp_sprt", "mdns").size == 0 and table.get("ipv4_ttl", "nope").size == 0
    probs = table.bit_probabilities("web")
    ttl = LAYOUT.span("ipv4_ttl").slice
    assert probs[ttl].tolist() == uint_to_bits(64, 8).astype(float).tolist()


# ------------------------------------------------------------------------------------------------ fidelity


def test_fidelity_identical_sets_zero_and_disjoint_ttl_one():
    web = class_traces(4, "a", 0, "web")
    same = fidelity(extract_fields(web), extract_fields(web))
    assert same["mean"]["all"] == {"jsd": 0.0, "tvd": 0.0, "hellinger": 0.0}
    assert same["mean"]["macro"]["jsd"] == 0.0 and same["bit_mad"]["macro"] == 0.0
    other = [make_trace([tcp_packet(ttl=128)] * len(t), "a", start_ns=i) for i, t in enumerate(web)]
    diff = fidelity(extract_fields(web), extract_fields(other))
    assert diff["fields"]["ipv4_ttl"]["per_class"]["a"]["jsd"] == pytest.approx(1.0)
    assert diff["fields"]["ipv4_ttl"]["macro"]["tvd"] == pytest.approx(1.0)
    assert diff["bit_mad"]["all"] > 0


def test_flows_group_replies_with_their_requests_and_stay_out_of_the_field_mean():
    request, reply = tcp_packet(sport=50123, dport=80), tcp_packet(sport=80, dport=50123)
    rows = [request, reply, request, reply, tcp_packet(sport=50124, dport=80), udp_packet(sport=68, dport=67)]
    flows = trace_field_values(make_trace(rows, "a"))["packets_per_flow"]
    assert sorted(flows.tolist()) == [0, 0, 8]  # 1, 1 and 4 packets: floor(4 log2 n)
    # the same packets with every reply's ports drawn on their own: four one-packet TCP flows
    lone = [request, tcp_packet(sport=80, dport=61000), tcp_packet(sport=50125, dport=80),
            tcp_packet(sport=80, dport=62000), tcp_packet(sport=50124, dport=80), udp_packet(sport=68, dport=67)]
    real, split = extract_fields([make_trace(rows, "a")]), extract_fields([make_trace(lone, "a")])
    res = fidelity(real, split)
    # flow-size bins {1: 2/3, 4: 1/3} against {1: 1}: JSD = (2/3 log2 0.8 + 1/3 + log2 1.2) / 2
    assert res["flows"]["packets_per_flow"]["macro"]["jsd"] == pytest.approx(0.19087, abs=1e-4)
    assert "packets_per_flow" not in res["fields"]
    assert fidelity(real, real)["flows"]["packets_per_flow"]["all"]["jsd"] == 0.0


def test_fidelity_missing_class_is_reported_and_left_out_of_macro():
    real = class_traces(2, "a", 0, "web") + class_traces(2, "b", 1, "mdns")
    res = fidelity(extract_fields(real), extract_fields(class_traces(2, "a", 0, "web")))
    assert res["missing_classes"] == ["b"]
    assert math.isnan(res["fields"]["ipv4_ttl"]["per_class"]["b"]["jsd"])
    assert res["fields"]["ipv4_ttl"]["macro"]["jsd"] == 0.0


# ------------------------------------------------------------------------------------------------ utility


def test_utility_separable_classes_and_swapped_labels():
    train = class_traces(6, "web", 0, "web") + class_traces(6, "mdns", 1, "mdns")
    test = class_traces(3, "web", 2, "web") + class_traces(3, "mdns", 3, "mdns")
    res = utility(train, test, k=4)
    for model in ("rf", "dt"):
        assert res[model]["accuracy"] == 1.0 and res[model]["macro_f1"] == 1.0
        assert res[model]["confusion"] == {"labels": ["mdns", "web"], "matrix": [[3, 0], [0, 3]]}
        assert res[model]["per_class"]["web"]["recall"] == 1.0
    swapped = [Trace(t.matrix, t.layout, t.ts_ns, "mdns" if t.label == "web" else "web") for t in train]
    assert utility(swapped, test, k=4, models=["dt"])["dt"]["accuracy"] == 0.0


def test_trace_features_pad_short_traces():
    x = trace_features(class_traces(2, "a", 0, "web"), k=20)
    assert x.shape[0] == 2 and x.shape[1] > 20 * LAYOUT.width
    assert (x[:, 12 * LAYOUT.width : 20 * LAYOUT.width] == -1).all()  # traces have < 12 packets


# ------------------------------------------------------------------------------------------------ privacy


def test_hamming_matches_brute_force_across_chunks():
    rng = np.random.default_rng(3)
    q = rng.integers(-1, 2, size=(37, 50)).astype(np.int8)
    t = rng.integers(-1, 2, size=(23, 50)).astype(np.int8)
    brute = (q[:, None, :] != t[None, :, :]).sum(axis=2)
    for chunk in (5, 512):
        best, arg = hamming_min(q, t, chunk=chunk)
        assert best.tolist() == brute.min(axis=1).tolist()
        assert brute[np.arange(len(q)), arg].tolist() == brute.min(axis=1).tolist()


def test_copied_training_set_is_all_exact_copies():
    train = class_traces(5, "a", 0, "web") + class_traces(5, "b", 1, "mdns")
    fresh = class_traces(3, "a", 7, "web") + class_traces(3, "b", 8, "mdns")
    d_copy, d_fresh = dcr(train, train, k=8), dcr(train, fresh, k=8)
    assert (d_copy == 0).all() and (d_fresh > 0).all()
    res = privacy_summary(d_copy, [t.label for t in train], d_fresh, [t.label for t in fresh])
    assert res["all"]["exact_copy_rate"] == 1.0 and res["all"]["near_copy_rate"] == 1.0
    assert res["all"]["median_ratio"] == 0.0 and res["macro"]["exact_copy_rate"] == 1.0
    ref = privacy_summary(d_fresh, [t.label for t in fresh], d_fresh, [t.label for t in fresh])
    assert ref["all"]["median_ratio"] == 1.0 and ref["per_class"]["a"]["median_ratio"] == 1.0


def test_near_copy_threshold_and_median_ratio():
    fresh = np.linspace(0.01, 1.0, 100)
    labels = ["a"] * 100
    ref = privacy_summary(fresh, labels, fresh, labels)
    assert ref["near_copy"] == pytest.approx(np.quantile(fresh, 0.05))
    assert ref["all"]["near_copy_rate"] == pytest.approx(0.05)  # the default rule: 5 % of fresh real traces
    assert privacy_summary(2 * fresh, labels, fresh, labels)["all"]["median_ratio"] == pytest.approx(2.0)
    fixed = privacy_summary(np.array([0.0, 0.02, 0.5]), ["a"] * 3, fresh, labels, near_copy=0.02)
    assert fixed["all"]["near_copy_rate"] == pytest.approx(2 / 3)
    assert fixed["all"]["exact_copy_rate"] == pytest.approx(1 / 3) and fixed["near_copy"] == 0.02


def test_membership_attack_finds_copied_members_and_nothing_else():
    members, others = class_traces(12, "a", 1, "web"), class_traces(12, "a", 2, "web")
    assert membership_auc(members, members, others)["auc"] == 1.0  # a copy of the training set gives it away
    assert membership_auc(others, members, others)["auc"] == 0.0
    fresh = class_traces(40, "a", 3, "web")  # new traces from the same distribution: no signal
    assert 0.3 <= membership_auc(fresh, members, others)["auc"] <= 0.7
    assert math.isnan(membership_auc([], members, others)["auc"])


def test_dcr_ignores_address_columns():
    layout = NETDIFFUSION_FULL
    rows = np.stack([packet_row(layout, ipv4_ver=4, ipv4_ttl=64, ipv4_src=1), packet_row(layout, ipv4_ver=4)])
    other = rows.copy()
    other[:, layout.span("ipv4_src").slice] = uint_to_bits(0xC0A80001, 32)
    a, b = Trace(rows, layout, None, "x"), Trace(other, layout, None, "x")
    assert dcr([a], [b], k=2).tolist() == [0.0]


# ------------------------------------------------------------------------------------------------ compliance


def test_compliance_summary_rates_per_class():
    reports = [
        {"packets": 10, "malformed": 1, "expert_errors": 0, "bad_checksums": 2, "failed": 2, "tool": "tshark"},
        {"packets": 30, "malformed": 0, "expert_errors": 3, "bad_checksums": 0, "failed": 3, "tool": "tshark"},
        {"packets": 5, "malformed": 0, "expert_errors": 0, "bad_checksums": 0, "failed": 0, "tool": "tshark"},
    ]
    res = summarise(reports, ["a", "b", "b"])
    assert res["all"]["malformed_rate"] == pytest.approx(1 / 45) and res["all"]["failed_rate"] == pytest.approx(5 / 45)
    assert res["per_class"]["a"]["bad_checksums_rate"] == pytest.approx(0.2)
    assert res["macro"]["expert_errors_rate"] == pytest.approx((0 + 3 / 35) / 2)
    assert res["all"]["pass_rate"] == pytest.approx(1 / 3) and res["per_class"]["b"]["pass_rate"] == 0.5
    assert res["all"]["application"] == 0  # reports without the field (older validators) count none


def test_application_section_mix_and_jsd():
    def rep(packets: int, app: int, mix: dict) -> dict:
        return {"packets": packets, "malformed": 0, "expert_errors": 0, "bad_checksums": 0, "application": app,
                "failed": app, "tool": "tshark", "protocols": mix}
    test = summarise([rep(10, 0, {"dns": 5, "tls": 5})], ["a"])
    same = summarise([rep(4, 0, {"dns": 2, "tls": 2})], ["a"])
    other = summarise([rep(10, 2, {"data": 10})], ["a"])
    app = application_section({"real_test": test, "real_train": same, "synthetic": other})
    assert app["mix_jsd"]["reference"] == pytest.approx(0.0) and app["mix_jsd"]["synthetic"] == pytest.approx(1.0)
    assert app["sets"]["synthetic"]["application_rate"] == pytest.approx(0.2)
    assert app["sets"]["real_test"]["protocol_mix"] == {"dns": 0.5, "tls": 0.5}


def test_compliance_sample_is_stratified_and_deterministic():
    files = [(f"/x/{lab}{i}.pcap", lab) for lab, n in (("a", 10), ("b", 2), ("c", 5)) for i in range(n)]
    chosen = sample_files(files[::-1], 7)
    assert len(chosen) == 7 and chosen == sample_files(files, 7)
    assert sorted(lab for _, lab in chosen) == ["a", "a", "a", "b", "b", "c", "c"]
    assert sample_files(files, None) == files


# ------------------------------------------------------------------------------------------------ evaluate + report


@pytest.fixture(scope="module")
def sets():
    train = class_traces(6, "web", 0, "web") + class_traces(6, "mdns", 1, "mdns")
    test = class_traces(3, "web", 2, "web") + class_traces(3, "mdns", 3, "mdns")
    return train, test


@pytest.fixture(scope="module")
def report(sets, tmp_path_factory):
    train, test = sets
    out = tmp_path_factory.mktemp("report")
    result = evaluate(train, test, list(train), out, k_packets=4, progress=False)
    return result, out


def test_copied_training_set_as_synthetic(report):
    result, _ = report
    syn, ref = result["summary"]["synthetic"], result["summary"]["reference"]
    assert syn["exact_copy_rate"] == 1.0 and syn["dcr_median"] == 0.0 and syn["dcr_median_ratio"] == 0.0
    assert ref["dcr_median_ratio"] == 1.0 and ref["exact_copy_rate"] == 0.0
    for key in ("fidelity_jsd_macro", "fidelity_tvd_all", "bit_mad_macro", "rf_accuracy", "dt_macro_f1"):
        assert syn[key] == ref[key]  # synthetic is real-train: the same numbers as the floor
    assert ref["rf_accuracy"] == 1.0
    assert result["compliance"]["reference"]["available"] is False  # in-memory traces have no pcap files


def test_report_json_keys_and_values(report):
    _, out = report
    doc = json.loads((out / "report.json").read_text())
    keys = {"format", "config", "inputs", "classes", "fidelity", "utility", "privacy", "compliance", "summary",
            "timings_s"}
    assert keys <= set(doc)
    assert set(doc["summary"]) == {"reference", "synthetic"}
    assert doc["classes"] == ["mdns", "web"]
    assert set(doc["inputs"]) == {"real_train", "real_test", "synthetic"}
    assert doc["inputs"]["real_test"]["classes"] == {"mdns": 3, "web": 3}
    fields = doc["fidelity"]["reference"]["fields"]
    assert {"ipv4_ttl", "tcp_opt_signature", "packets_per_trace", "protocol_mix", "log_iat"} <= set(fields)
    assert set(doc["fidelity"]["synthetic"]["flows"]) == {"packets_per_flow"}
    assert doc["summary"]["reference"]["flow_size_jsd_macro"] >= 0
    assert set(fields["ipv4_ttl"]) >= {"all", "per_class", "macro"}
    assert set(doc["utility"]["synthetic"]) == {"rf", "dt"}
    assert doc["summary"]["synthetic"]["exact_copy_rate"] == 1.0
    assert doc["timings_s"]["total"] > 0


def test_html_is_self_contained(report):
    _, out = report
    text = (out / "report.html").read_text()
    assert "<script" not in text and "<link" not in text and "@import" not in text and "url(" not in text
    refs = []

    class Refs(HTMLParser):
        def handle_starttag(self, tag, attrs):
            refs.extend(v for k, v in attrs if k in ("src", "href", "data", "action", "background", "srcset"))

    Refs().feed(text)
    assert all(v.startswith("data:image/png;base64,") for v in refs), [v[:40] for v in refs]
    assert len(refs) >= 2 * 3 + 1 + 4 + 1  # 2 classes x 3 sets + histograms + 4 confusion matrices + DCR
    for v in refs:
        assert Image.open(io.BytesIO(base64.b64decode(v.split(",", 1)[1]))).format == "PNG"
    assert "reference: real-train vs real-test" in text


def test_markdown_has_headline_rows(report):
    result, out = report
    md = (out / "report.md").read_text()
    assert md == markdown(result)
    assert "| reference: real-train vs real-test (the floor) |" in md and "| synthetic vs real-test |" in md


def test_report_tables_are_readable(report):
    _, out = report
    md, text = (out / "report.md").read_text(), (out / "report.html").read_text()
    header_rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    widths = [line.count(" | ") + 1 for line in md.splitlines() if line.startswith("|---")]
    assert max(widths) <= 8 and len(header_rows) > 10  # wide tables split or transposed
    decimals = re.findall(r"(?:<td>|\| )(-?\d+\.\d+)(?:</td>| \|)", md + text)
    assert decimals and all(len(d.replace("-", "").replace(".", "").lstrip("0")) <= 3 for d in decimals)  # 3 digits
    assert "| JSD |" in md and "| MIA AUC |" in md  # the headline: one line per metric
    assert '{"k_packets"' not in text and "<th>k_packets</th><td>4</td>" in text  # the config as a small table
    assert "<details>" in text  # the long per-field table starts collapsed


def test_kfp_metric_shapes(report):
    result, out = report
    k = kfp_metrics(result, (out / "report.html").read_text())
    assert k["metrics"]["synthetic_exact_copy_rate"] == 1.0
    assert all(isinstance(v, float) and math.isfinite(v) for v in k["metrics"].values())
    assert all(re.fullmatch(r"[a-z0-9_]+", name) for name in k["metrics"])
    cm = k["confusion_matrices"]["reference_rf"]
    assert cm["categories"] == ["mdns", "web"] and cm["matrix"] == [[3, 0], [0, 3]]
    assert set(k["confusion_matrices"]) == {"reference_rf", "reference_dt", "synthetic_rf", "synthetic_dt"}
    assert k["html"].startswith("<!DOCTYPE html>")


def test_floor_only_report(sets):
    train, test = sets
    result = evaluate(train, test, None, None, k_packets=4, progress=False)
    assert set(result["summary"]) == {"reference"} and "synthetic" not in result["utility"]
    assert "synthetic" not in html(result)


def test_class_map_turns_type_names_into_labels(sets, tmp_path):
    train, test = sets
    cmap = ClassMap.from_labels(["mdns", "web"])
    path = tmp_path / "class_map.json"
    cmap.save(path)
    typed = [Trace(t.matrix, t.layout, t.ts_ns, cmap.type_name(t.label)) for t in train]
    plain = evaluate(train, test, typed, None, k_packets=4, progress=False, run_compliance=False)
    assert plain["class_coverage"]["synthetic"] == {"missing": ["mdns", "web"], "extra": ["type-0", "type-1"]}
    assert plain["summary"]["synthetic"]["rf_accuracy"] == 0.0
    mapped = evaluate(train, test, typed, None, k_packets=4, progress=False, run_compliance=False, class_map=path)
    assert mapped["class_coverage"]["synthetic"] == {"missing": [], "extra": []}
    assert mapped["summary"]["synthetic"]["rf_accuracy"] == 1.0


def test_json_safe_replaces_non_finite():
    assert json_safe({"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": np.int64(3)}) == {
        "a": None, "b": [1.5, None], "c": 3}
