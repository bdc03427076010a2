"""``model.iat_decode=role``: inter-arrival times moved, rank for rank, to the class's real times of each packet's
role (opening a flow, later request, reply, no ports); netdiff_lib/models/native/iat_roles.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sample_sets import labelled_traces

from netdiff_lib.config import Config, tiny
from netdiff_lib.errors import ConfigError
from netdiff_lib.generate import write_pcaps
from netdiff_lib.models.native.field_tokens import FieldTokens
from netdiff_lib.models.native.iat_roles import ROLES, fit_iat_roles, packet_roles, role_iat
from netdiff_lib.models.native.model import load_model_dir, save_model_dir
from netdiff_lib.models.native.sampler import generate_traces
from netdiff_lib.models.native.tokens import FieldTokenizer, read_fields
from netdiff_lib.trace import Trace
from netdiff_lib.validate import validate_pcap

#: log10(1 + µs) quantile tables: openings 10^5..10^6 µs, requests and replies 1..10 µs, other 100..1,000 µs
TABLES = {"": {"all": list(np.linspace(0.0, 6.0, 101)), "open": list(np.linspace(5.0, 6.0, 101)),
               "request": list(np.linspace(0.3, 1.0, 101)), "reply": list(np.linspace(0.3, 1.0, 101)),
               "other": list(np.linspace(2.0, 3.0, 101))}}


@pytest.fixture(scope="module")
def traces(samples_dir: Path) -> list[Trace]:
    return labelled_traces(samples_dir, 256)


def _fit(traces: list[Trace], iat_decode: str = "role") -> FieldTokenizer:
    return FieldTokenizer.fit([t.matrix for t in traces], [t.label for t in traces], endpoints_mode="conv",
                              conversations=8, tcp_state="enforce", conv_decode="regroup",
                              iats=[t.iat_us() for t in traces], iat_decode=iat_decode)


def _batch(tok: FieldTokenizer, traces: list[Trace]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The traces' own tokens in one batch: (tokens, trace of each row, labels)."""
    tokens = np.concatenate([tok.encode(t.matrix, t.iat_us())[0] for t in traces])
    return tokens, np.repeat(np.arange(len(traces)), [len(t.matrix) for t in traces]), [t.label for t in traces]


def _roles(matrix: np.ndarray, trace_of: np.ndarray) -> np.ndarray:
    f = read_fields(matrix)
    return packet_roles(trace_of, f.l3, f.l4, f.values["sport"], f.values["dport"])


def test_the_rule_puts_the_long_gaps_where_flows_open(traces: list[Trace]) -> None:
    """Real conversation tokens with role-blind sampled times (uniform on the log scale): decoded with ``role``,
    every gap before a packet that opens a flow is long and every gap inside one short, as the tables say;
    ``sampled`` keeps the times as drawn."""
    tok = _fit(traces)
    tok.iat_roles = TABLES
    tokens, trace_of, labels = _batch(tok, traces)
    iat = np.random.default_rng(1).uniform(-1.0, 1.0, len(tokens))
    matrix, got = tok.decode(tokens, iat, trace_of, np.random.default_rng(0), labels)
    role = _roles(matrix, trace_of)
    opens, inside = role == ROLES.index("open"), (role == ROLES.index("request")) | (role == ROLES.index("reply"))
    assert opens.sum() > 20 and inside.sum() > 100
    assert got[opens].min() >= 10**5 - 1 and got[inside].max() <= 10**1 - 1
    other = role == ROLES.index("other")
    assert other.any() and np.all((got[other] >= 10**2 - 1) & (got[other] <= 10**3 - 1))
    tok.iat_decode = "sampled"
    m2, plain = tok.decode(tokens, iat, trace_of, np.random.default_rng(0), labels)
    assert np.array_equal(m2, matrix) and not np.allclose(plain, got)
    assert np.median(plain[opens]) < 10**5 and np.median(plain[inside]) > 10  # role-blind as sampled


def test_quantile_mapping_keeps_the_order_within_a_role() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    us = 10.0 ** rng.uniform(0, 7, n) - 1.0
    role = rng.integers(0, len(ROLES), n)
    trace_of = np.repeat(np.arange(40), n // 40)
    labels = ["a" if i % 2 else "b" for i in range(40)]
    tables = {"": TABLES[""], "a": {"all": list(np.linspace(0, 7, 101)), "open": list(np.sort(rng.uniform(3, 7, 101))),
                                    "reply": [1.0] * 50 + list(np.linspace(1.0, 2.0, 51))}}
    out = role_iat(us, role, trace_of, labels, tables)
    lab = np.asarray(labels)[trace_of]
    for name in ("a", "b"):
        for r in range(len(ROLES)):
            rows = (lab == name) & (role == r)
            order = np.argsort(us[rows])
            assert np.all(np.diff(out[rows][order]) >= -1e-6 * out[rows][order][1:])
    # class "a" has no "request" table: the pooled one ("") applies; its "open" times stay in its table's range
    a_open = (lab == "a") & (role == 0)
    assert out[a_open].min() >= 10**3 - 1 and out[a_open].max() <= 10**7
    a_req = (lab == "a") & (role == 1)
    assert out[a_req].max() <= 10**1 - 1
    # a rank keeps its level: the median sampled time of "b" maps to about the median of its role's table
    b_other = (lab == "b") & (role == 3)
    assert abs(np.median(np.log10(1 + out[b_other])) - 2.5) < 0.1


def test_fit_reads_roles_from_the_flows_and_skips_each_traces_first_packet() -> None:
    """Three traces of: TCP 1000 -> 80, TCP 80 -> 1000, UDP 53 -> 2000, repeated, every tenth packet ICMP."""
    trace_of = np.repeat([0, 1, 2], 30)
    l3, l4 = np.full(90, 4), np.tile([1, 1, 2] * 10, 3)
    sport, dport = np.tile([1000, 80, 53] * 10, 3), np.tile([80, 1000, 2000] * 10, 3)
    l4[::10] = 3
    role = packet_roles(trace_of, l3, l4, sport, dport)
    # ICMP; TCP 80 -> 1000 opens its flow; UDP opens inside the TCP flow; TCP 1000 -> 80 replies; TCP 80 -> 1000
    # and UDP request; the later ICMP packets are inside both flows
    assert list(role[:6]) == [3, 0, 4, 2, 1, 1] and list(role[30:36]) == [3, 0, 4, 2, 1, 1]
    assert list(role[[10, 20, 29]]) == [5, 5, 1] and ROLES[4:] == ("open_inside", "other_inside")
    iat = np.tile([5.0e6] + [10.0] * 29, 3)
    iat[[3, 33, 63]] = 1.0e3
    tables = fit_iat_roles(trace_of, l3, l4, sport, dport, iat, ["x"] * 3)
    assert set(tables) == {"", "x"} and tables["x"]["all"][-1] < 3.1  # the 5 s first gaps are left out
    assert set(tables["x"]) == {"all", "request", "reply"}  # 3 + 3 openings, 3 + 6 ICMP packets: too few for a table
    assert tables["x"]["reply"][-1] == pytest.approx(np.log10(1001), abs=1e-4) and tables["x"]["request"][-1] < 1.1


def test_a_folder_without_the_fitted_state_decodes_as_before(traces: list[Trace], tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        tiny().with_settings(["model.iat_decode=roles"])
    assert Config.from_dict({"model": {"representation": "tokens"}}).model.iat_decode == "sampled"
    cfg = tiny().with_settings(["model.conversations=8", "model.iat_decode=role"])
    labels = sorted({t.label for t in traces})
    rep = FieldTokens.fit(cfg, traces, [t.label for t in traces])
    stats = {"lengths": {lab: [7, 30] for lab in labels}, "iat_us": {}, "traces": {}, "packets": {}}
    save_model_dir(tmp_path / "m", dict(rep.network(cfg, len(labels)).named_parameters()), cfg, rep, labels, stats)
    saved = json.loads((tmp_path / "m" / "tokens.json").read_text())
    assert saved["iat_decode"] == "role" and set(saved["iat_roles"]) >= {"", *labels}
    assert load_model_dir(tmp_path / "m").representation.tokenizer == rep.tokenizer
    tok = rep.tokenizer
    tokens, trace_of, labs = _batch(tok, traces)
    iat = np.random.default_rng(2).uniform(-1.0, 1.0, len(tokens))

    def decode(t: FieldTokenizer) -> np.ndarray:
        return t.decode(tokens, iat, trace_of, np.random.default_rng(4), labs)[1]

    role, plain = decode(tok), decode(FieldTokenizer.from_dict({**saved, "iat_decode": "sampled"}))
    assert not np.allclose(role, plain)
    for key in ("iat_decode", "iat_roles"):
        del saved[key]
    (tmp_path / "m" / "tokens.json").write_text(json.dumps(saved))
    older = load_model_dir(tmp_path / "m").representation.tokenizer
    assert (older.iat_decode, older.iat_roles) == ("sampled", {}) and np.array_equal(decode(older), plain)
    assert np.array_equal(decode(FieldTokenizer.from_dict({**saved, "iat_decode": "role"})), plain)  # no tables


def test_a_tiny_models_role_decoded_pcaps_pass_tshark(traces: list[Trace], tmp_path: Path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    cfg = tiny().with_settings(["model.conversations=8", "model.iat_decode=role"])
    labels = sorted({t.label for t in traces})
    rep = FieldTokens.fit(cfg, traces, [t.label for t in traces])
    stats = {"lengths": {lab: [40, 90] for lab in labels}, "iat_us": {}, "traces": {}, "packets": {}}
    save_model_dir(tmp_path / "m", dict(rep.network(cfg, len(labels)).named_parameters()), cfg, rep, labels, stats)
    model = load_model_dir(tmp_path / "m")
    out = generate_traces(model, 2, seed=0, progress=False)
    paths = write_pcaps(out, tmp_path / "pcaps", model.layout, seed=0, progress=False)
    assert len(paths) == 2 * len(labels)
    for path in paths:
        rep_ = validate_pcap(path, "tshark")
        assert rep_.packets > 0 and (rep_.malformed, rep_.expert_errors, rep_.bad_checksums) == (0, 0, 0), path
