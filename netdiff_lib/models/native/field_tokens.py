"""Representation ``tokens``: header fields as categorical tokens, masked discrete diffusion in two stages.

The seam (:class:`~netdiff_lib.models.native.representation.Representation`) over two modules: the tokenizer
(:mod:`~netdiff_lib.models.native.tokens`: per-field vocabularies fitted on the training traces, rows of field
tokens plus the log inter-arrival time, decoding back to nPrint rows) and the model
(:mod:`~netdiff_lib.models.native.discrete`: :class:`~netdiff_lib.models.native.discrete.TokenDiT`, its loss,
its two-stage schedule and its sampler).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netdiff_lib.config import Config, ModelConfig
from netdiff_lib.models.native.discrete import TokenDiT, TwoStageSchedule, sample_tokens, token_loss
from netdiff_lib.models.native.representation import Representation
from netdiff_lib.models.native.token_decode import BatchCodec, with_rules
from netdiff_lib.models.native.tokens import IAT_TOKEN_BINS, FieldTokenizer
from netdiff_lib.schema import Layout
from netdiff_lib.trace import Trace

#: the fields revealed first with ``diffusion.reveal=structure_first`` (the packet kind is stage 1 already)
STRUCTURE_FIELDS = ("conv", "server_port", "client_port", "sport", "dport")
#: the ``model`` keys the tokenizer keeps a copy of and decodes by (tokens.json)
DECODE_RULES = ("tcp_state", "conv_decode", "iat_decode")


class FieldTokens(Representation):
    name = "tokens"
    file = "tokens.json"
    metric = "token_ce"
    metric_label = "masked-token cross-entropy"

    def __init__(self, tokenizer: FieldTokenizer) -> None:
        self.tokenizer = tokenizer
        self._applicable: dict[str, torch.Tensor] = {}

    @classmethod
    def fit(cls, cfg: Config, traces: list[Trace], labels: list[str]) -> FieldTokens:
        m = cfg.model
        return cls(FieldTokenizer.fit([t.matrix for t in traces], labels, max_values=m.vocab_max_values,
                                      escape_bins=m.escape_bins, port_slots=m.port_slots,
                                      port_min_traces=m.port_min_traces,
                                      iat_bins=IAT_TOKEN_BINS if m.iat == "tokens" else 0,
                                      endpoints_mode=m.endpoints, conversations=m.conversations,
                                      tcp_state=m.tcp_state, conv_decode=m.conv_decode,
                                      iats=[t.iat_us() for t in traces], iat_decode=m.iat_decode))

    @property
    def layout(self) -> Layout:
        return self.tokenizer.layout

    @property
    def width(self) -> int:
        return self.tokenizer.width

    @property
    def signature(self) -> list[int]:
        return self.tokenizer.sizes

    def describe(self) -> dict[str, Any]:
        tok = self.tokenizer
        return {"vocabulary": dict(zip(tok.fields, tok.sizes, strict=True)), "exact_token_share": tok.coverage}

    def rows(self, trace: Trace) -> np.ndarray:
        return self.tokenizer.rows(trace.matrix, trace.iat_us())

    def rows_many(self, traces: Sequence[Trace]) -> np.ndarray:
        if not traces:
            return np.zeros((0, self.width), np.float32)
        lengths = [len(t.matrix) for t in traces]
        trace_of = np.repeat(np.arange(len(traces)), lengths)
        return self.tokenizer.rows(np.concatenate([t.matrix for t in traces]),
                                   np.concatenate([t.iat_us() for t in traces]), trace_of)

    def network(self, cfg: Config, n_classes: int) -> TokenDiT:
        return TokenDiT(cfg.model, self.tokenizer.sizes, n_classes)

    def schedule(self, cfg: Config) -> TwoStageSchedule:
        return TwoStageSchedule.of(cfg)

    def applicable(self, device: torch.device | str) -> torch.Tensor:
        """Which fields each packet kind carries, on ``device`` (made once per device)."""
        key = str(device)
        if key not in self._applicable:
            self._applicable[key] = torch.from_numpy(self.tokenizer.applicable()).to(device)
        return self._applicable[key]

    def structure_columns(self) -> list[int]:
        """The token columns that ``diffusion.reveal=structure_first`` reveals first: a packet's conversation and
        its ports (``model.endpoints=conv``) or its two ports (``ports``)."""
        return [i for i, name in enumerate(self.tokenizer.fields) if name in STRUCTURE_FIELDS]

    def loss(self, model: torch.nn.Module, net: torch.nn.Module, cfg: Config, rows: torch.Tensor,
             labels: torch.Tensor, lengths: torch.Tensor, gen: torch.Generator,
             padded: bool) -> tuple[torch.Tensor, torch.Tensor]:
        tok, w = self.tokenizer, cfg.diffusion.conv_weight
        weights = [w if f == "conv" else 1.0 for f in tok.fields] if w != 1.0 and "conv" in tok.fields else None
        return token_loss(model, net, rows, labels, lengths, cfg, self.applicable(rows.device), gen, padded, weights)

    def sample(self, net: torch.nn.Module, cfg: Config, labels: torch.Tensor, lengths: torch.Tensor, n: int, *,
               steps: int, guidance: float, gen: torch.Generator, padded: bool) -> tuple[np.ndarray, np.ndarray]:
        tokens, iat = sample_tokens(net, labels, lengths, n, steps=steps, guidance=guidance,
                                    applicable=self.applicable(labels.device), gen=gen, cfg=cfg, padded=padded,
                                    confident=self.tokenizer.col("conv") if cfg.diffusion.conv_order == "confident"
                                    and self.tokenizer.endpoints == "conv" else None,
                                    structure=self.structure_columns())
        keep = (torch.arange(n, device=lengths.device)[None] < lengths[:, None]).ravel().cpu().numpy()
        tokens = tokens.reshape(-1, tokens.shape[-1]).to(torch.int32).cpu().numpy()  # half the bytes to copy, send
        return tokens[keep], iat.float().cpu().numpy().ravel()[keep]

    def decode(self, host: tuple[np.ndarray, np.ndarray], lengths: np.ndarray, labels: list[str],
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        codec = self.host_codec()
        return codec.expand(codec.decode_compact(host, lengths, labels, rng))

    def host_codec(self) -> BatchCodec:
        return BatchCodec(self.tokenizer)

    def with_decoding(self, model: ModelConfig, keys: Sequence[str]) -> tuple[FieldTokens, list[str]]:
        """The tokenizer's decoding rules ``keys`` (of :data:`DECODE_RULES`) as in ``model``: see
        :func:`~netdiff_lib.models.native.token_decode.with_rules`."""
        rules = {k: getattr(model, k) for k in keys if k in DECODE_RULES}
        if not rules:
            return self, []
        tok, notices = with_rules(self.tokenizer, **rules)
        return FieldTokens(tok), notices

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(path)

    @classmethod
    def load(cls, path: str | Path) -> FieldTokens:
        return cls(FieldTokenizer.load(path))
