"""The token model: masked (absorbing-state) discrete diffusion over header-field tokens, jointly with Gaussian
diffusion of the inter-arrival time, in two stages.

Representation (:mod:`netdiff_lib.models.native.tokens`): each packet is one transformer position holding one
categorical token per header field plus a continuous log inter-arrival time.  The network (:class:`TokenDiT`)
embeds a packet as the sum of its fields' token embeddings (one extra ``MASK`` token per field) plus its noisy
inter-arrival time, runs the adaLN-Zero transformer (:class:`~netdiff_lib.models.native.layers.Trunk`) and
returns per-field logits plus a clean-sample estimate of the inter-arrival time, through a learned gate on
the noisy input (``x0 = m + g x_t``, ``g = 2 sigmoid(s) sqrt(alpha_bar)``).

Forward process, over a global time ``t`` in [0, 1]:

* **stage 1** (``t`` from 1 to 1/2): the packets' ``kind`` tokens (IP version, protocol, transport) are
  masked with probability ``2t - 1``; every other field is masked;
* **stage 2** (``t`` from 1/2 to 0): every ``kind`` is visible, the fields a kind does not carry are visible
  as "absent", each remaining field token is masked with probability ``2t``, and the inter-arrival time is
  noised to ``alpha_bar = cos^2(pi t)``.

So a trace's protocol skeleton (which packets are TCP, UDP, ICMP, IPv4 or IPv6) is generated first, and its
fields follow, each constrained to the categories its packet's kind allows; the loss is the cross-entropy of
the masked tokens the sampler draws at that time (stage 1: the kinds; stage 2: the fields), averaged over
them, plus the min-SNR weighted error of the inter-arrival estimate (stage 2).  Sampling is the ancestral
sampler of absorbing diffusion (from ``t`` to ``s`` a masked token is revealed with probability
``(t - s) / t``, drawn from the model's categorical, with classifier-free guidance on the logits) and DDIM for
the inter-arrival time.

``diffusion.reveal=structure_first`` changes the order of sampling only (:func:`reveal_plan`): after the kinds,
the structure fields (a TCP/UDP packet's conversation and its ports) are revealed alone, then every other field
and the inter-arrival time conditioned on them.  Trained on random masks, the model has learned the fields given any
visible part of the others (whole columns shown and the rest hidden is a rare case of it), so the same weights
serve both orders.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from netdiff_lib.config import Config, DiffusionConfig, ModelConfig
from netdiff_lib.models.native.layers import Trunk
from netdiff_lib.models.native.representation import NoiseSchedule

Step = tuple[float, float, float, float]
TIME_SCALE = 1000.0  # the time embedding sees t * TIME_SCALE, the range the sinusoids were made for
MIN_ALPHA_BAR = 1e-5


def alpha_bar(t_field: torch.Tensor) -> torch.Tensor:
    """Signal level of the inter-arrival time at stage-2 time ``t_field`` in [0, 1] (cosine schedule)."""
    return torch.cos(0.5 * math.pi * t_field).pow(2).clamp(MIN_ALPHA_BAR, 1.0)


def stage_times(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(kind mask rate, field mask rate) at global time ``t``."""
    return (2 * t - 1).clamp(0, 1), (2 * t).clamp(0, 1)


class TwoStageSchedule(NoiseSchedule):
    """Training: a ``kind_share`` of the samples in stage 1 (``t`` uniform in [1/2, 1)), the rest in stage 2
    ([0, 1/2)); sampling: a ``kind_steps`` share of the steps in stage 1 (:func:`schedule`)."""

    def __init__(self, kind_share: float, kind_steps: float) -> None:
        self.kind_share, self.kind_steps = kind_share, kind_steps

    @classmethod
    def of(cls, cfg: Config) -> TwoStageSchedule:
        return cls(cfg.diffusion.kind_share, cfg.diffusion.kind_steps)

    def train_levels(self, batch: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        stage1 = torch.rand(batch, generator=gen, device=device) < self.kind_share
        u = torch.rand(batch, generator=gen, device=device)
        return torch.where(stage1, 0.5 + 0.5 * u, 0.5 * u)

    def grid(self, steps: int) -> list[tuple[float, float]]:
        return schedule(steps, self.kind_steps)


class TokenDiT(Trunk):
    """``forward(tokens, iat_t, t, labels, lengths) -> (logits (B, N, sum(sizes)), iat x0 (B, N))``."""

    def __init__(self, cfg: ModelConfig, sizes: list[int], n_classes: int) -> None:
        super().__init__(cfg, n_classes, int(sum(sizes)) + 2)  # every field's logits, then the IAT's (mean, gate)
        self.sizes = list(sizes)
        rows = [s + 1 for s in sizes]  # each field: its categories, then MASK
        self.register_buffer("offsets", torch.tensor(np.r_[0, np.cumsum(rows)[:-1]], dtype=torch.long),
                             persistent=False)
        self.register_buffer("mask_ids", torch.tensor(sizes, dtype=torch.long), persistent=False)
        self.embed = nn.EmbeddingBag(int(sum(rows)), cfg.d_model, mode="sum")
        nn.init.normal_(self.embed.weight, std=0.02)
        self.iat_in = nn.Linear(1, cfg.d_model)

    def forward(self, tokens: torch.Tensor, iat_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                lengths: torch.Tensor, padded: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, f = tokens.shape
        h = self.embed((tokens + self.offsets).reshape(b * n, f)).view(b, n, -1)
        h = h + self.iat_in(iat_t[..., None].to(h.dtype))
        out = self.trunk(h, t * TIME_SCALE, labels, lengths, padded)
        logits, m, s = out[..., :-2], out[..., -2], out[..., -1]
        gate = 2.0 * torch.sigmoid(s) * alpha_bar(stage_times(t)[1]).sqrt()[:, None]
        return logits, m + gate * iat_t.float()

    def field_logits(self, logits: torch.Tensor) -> list[torch.Tensor]:
        """Split the flat logits into one tensor per field."""
        return list(torch.split(logits, self.sizes, dim=-1))


def token_loss(model: nn.Module, raw: TokenDiT, x0: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor,
               cfg: Config, applicable: torch.Tensor, gen: torch.Generator,
               padded: bool = True, field_weights: list[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, masked-token cross-entropy) of one batch; ``x0`` packs tokens (as floats) and the IAT feature.

    ``model`` is what runs the forward pass (possibly wrapped for DDP or compiled), ``raw`` the network itself;
    ``field_weights`` (one per field, default all 1) weight the fields' cross-entropies in the loss (the
    returned cross-entropy stays unweighted).
    """
    b, n, width = x0.shape
    dev = x0.device
    tokens, iat = x0[..., :-1].long(), x0[..., -1]
    d = cfg.diffusion
    t = TwoStageSchedule.of(cfg).train_levels(b, gen, dev)
    stage1 = t >= 0.5
    t_kind, t_field = stage_times(t)
    rate = torch.cat([t_kind[:, None], t_field[:, None].expand(b, width - 2)], dim=1)[:, None, :]
    masked = torch.rand(tokens.shape, generator=gen, device=dev) < rate
    masked &= applicable[tokens[..., 0]] | stage1[:, None, None]  # stage 2: what a kind lacks is shown
    x_in = torch.where(masked, raw.mask_ids, tokens)
    ab = alpha_bar(t_field)
    noise = torch.randn(iat.shape, generator=gen, device=dev)
    iat_t = ab.sqrt()[:, None] * iat + (1 - ab).sqrt()[:, None] * noise
    drop = torch.rand(b, generator=gen, device=dev) < d.class_dropout
    labels = torch.where(drop, torch.full_like(labels, raw.null_class), labels)
    logits, iat0 = model(x_in, iat_t, t, labels, lengths, padded=padded)
    valid = torch.arange(n, device=dev)[None] < lengths[:, None]
    # scored: the masked tokens the sampler draws at this time; in stage 1 only the kinds (the field logits
    # of stage-1 times are never read), in stage 2 the fields
    scored = masked & valid[..., None]
    scored[..., 1:] &= ~stage1[:, None, None]
    ce, weighted, mass = torch.zeros((b, n), device=dev), torch.zeros((b, n), device=dev), 0.0
    for j, lf in enumerate(raw.field_logits(logits)):
        ce_j = F.cross_entropy(lf.reshape(b * n, -1), tokens[..., j].reshape(-1), reduction="none").view(b, n)
        ce = ce + ce_j * scored[..., j]
        if field_weights is not None and field_weights[j] != 1.0:
            weighted = weighted + (field_weights[j] - 1.0) * ce_j * scored[..., j]
            mass = mass + (field_weights[j] - 1.0) * scored[..., j].sum()
    ce_loss = ce.sum() / scored.sum().clamp(min=1)
    loss = ce_loss if field_weights is None else (ce.sum() + weighted.sum()) / (scored.sum() + mass).clamp(min=1)
    return loss + d.iat_weight * _iat_loss(iat0, iat, valid, lengths, ab, stage1, d), ce_loss.detach()


def _iat_loss(iat0: torch.Tensor, iat: torch.Tensor, valid: torch.Tensor, lengths: torch.Tensor, ab: torch.Tensor,
              stage1: torch.Tensor, d: DiffusionConfig) -> torch.Tensor:
    """The min-SNR weighted error of the inter-arrival estimate (stage 2 only)."""
    weight = torch.clamp(ab / (1 - ab), max=d.min_snr_gamma) * (~stage1)
    iat_err = ((iat0 - iat) ** 2 * valid).sum(dim=1) / lengths.clamp(min=1)
    return (iat_err * weight).mean()


def _gumbel_pick(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(logits.shape, generator=gen, device=logits.device).clamp_(1e-20, 1.0)
    return (logits / max(temperature, 1e-6) - torch.log(-torch.log(u))).argmax(dim=-1)


def schedule(steps: int, kind_steps: float) -> list[tuple[float, float]]:
    """(t, s) pairs of the sampler: ``round(steps * kind_steps)`` (at least 1) in stage 1, the rest in stage 2."""
    k1 = min(max(1, round(steps * kind_steps)), steps - 1) if steps > 1 else 1
    k2 = max(1, steps - k1)
    ts = np.r_[np.linspace(1.0, 0.5, k1 + 1)[:-1], np.linspace(0.5, 0.0, k2 + 1)]
    return [(float(a), float(b)) for a, b in pairwise(ts)]


def reveal_plan(steps: int, kind_steps: float, structure_steps: float | None = None) -> list[Step]:
    """``(t, s, t_structure, s_structure)`` per sampler step: the network, the kinds, the fields and the
    inter-arrival time go from global time ``t`` to ``s``, the structure fields from ``t_structure`` to
    ``s_structure``.  ``structure_steps`` ``None``: :func:`schedule`, every field at the same pace.  Else the
    same number of steps, stage 1 unchanged, then a ``structure_steps`` share of the stage-2 steps (at least one,
    at most all but one) takes only the structure fields from 1/2 to 0 (the network at 1/2: the other fields all
    masked, the inter-arrival time pure noise, as the model saw them in training at that time), and the rest
    takes the other fields and the inter-arrival time from 1/2 to 0, with the structure fields shown.  Fewer than
    two stage-2 steps cannot be split: then as :func:`schedule`."""
    grid = schedule(steps, kind_steps)
    stage1 = [(t, s, t, s) for t, s in grid if t > 0.5]
    k2 = len(grid) - len(stage1)
    if structure_steps is None or k2 < 2:
        return [(t, s, t, s) for t, s in grid]
    ks = min(max(1, round(k2 * structure_steps)), k2 - 1)
    first = [(0.5, 0.5, float(a), float(b)) for a, b in pairwise(np.linspace(0.5, 0.0, ks + 1))]
    rest = [(float(a), float(b), 0.0, 0.0) for a, b in pairwise(np.linspace(0.5, 0.0, k2 - ks + 1))]
    return stage1 + first + rest


@torch.no_grad()
def sample_tokens(net: TokenDiT, labels: torch.Tensor, lengths: torch.Tensor, n: int, *, steps: int,
                  guidance: float, applicable: torch.Tensor, gen: torch.Generator, cfg: Config,
                  padded: bool = True, confident: int | None = None, structure: Sequence[int] = (),
                  record: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (B, n, fields) long, IAT feature (B, n)) for ``labels`` of ``lengths``; guidance 1 = none;
    ``confident``: the field whose tokens are revealed most confident first (as many per trace and step as
    the random reveal would); ``structure``: the columns of the structure fields, revealed first when
    ``diffusion.reveal`` is ``structure_first`` (:func:`reveal_plan`); ``record``: a list that receives a copy of
    (tokens, IAT feature) after every step."""
    dev = labels.device
    b, f = len(labels), len(net.sizes)
    tokens = net.mask_ids.expand(b, n, f).clone()
    iat = torch.randn((b, n), generator=gen, device=dev)
    y, guided = _guidance_labels(net, labels, guidance)
    lens = torch.cat([lengths, lengths]) if guided else lengths
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    temperature = cfg.diffusion.temperature
    first = bool(structure) and cfg.diffusion.reveal == "structure_first"
    cols = torch.tensor([j in structure for j in range(1, f)], device=dev)[:, None, None] if first else None
    for t, s, ts, ss in reveal_plan(steps, cfg.diffusion.kind_steps, cfg.diffusion.structure_steps if first else None):
        tt = torch.full((len(y),), t, device=dev)
        x_in, i_in = (torch.cat([tokens, tokens]), torch.cat([iat, iat])) if guided else (tokens, iat)
        with autocast:
            logits, x0 = net(x_in, i_in, tt, y, lens, padded=padded)
        if guided:
            lc, lu = logits.float().chunk(2)
            logits = lu + guidance * (lc - lu)
            xc, xu = x0.chunk(2)
            x0 = xu + guidance * (xc - xu)
        parts = net.field_logits(logits)
        (tk, tf), (sk, sf) = stage_times(torch.tensor(t)), stage_times(torch.tensor(s))
        if tk > 0:
            reveal = _reveal(tokens[..., 0] == net.mask_ids[0], float((tk - sk) / tk), gen)
            _draw(tokens[..., 0], reveal, parts[0], temperature, gen)
        if tk == 0 or sk == 0:
            p_structure = _share(*(float(stage_times(torch.tensor(v))[1]) for v in (ts, ss))) if first else None
            tokens = _fields_step(net, tokens, parts, applicable, float(tf), float(sf), temperature, gen,
                                  confident, None if cols is None or p_structure is None else (cols, p_structure))
            iat = _ddim(iat, x0.clamp(-1, 1), float(tf), float(sf))
        if record is not None:
            record.append((tokens.clone(), iat.clone()))
    return tokens, iat.clamp(-1, 1)


def _share(tf: float, sf: float) -> float:
    """The share of the still masked tokens that a step from field time ``tf`` to ``sf`` reveals."""
    return (tf - sf) / tf if tf > 0 else 1.0


def _fields_step(net: TokenDiT, tokens: torch.Tensor, parts: list[torch.Tensor], applicable: torch.Tensor,
                 tf: float, sf: float, temperature: float, gen: torch.Generator,
                 confident: int | None = None,
                 structure: tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
    """Stage 2: show what each packet's kind lacks as absent, then reveal a share of the masked fields;
    ``structure`` (which of fields 1.. are structure fields (fields - 1, 1, 1), their share): those fields at
    their own pace."""
    app = applicable[tokens[..., 0]]
    masked = tokens == net.mask_ids
    tokens = torch.where(masked & ~app, torch.zeros_like(tokens), tokens)
    if tf <= 0:
        return tokens
    p = (tf - sf) / tf
    # every field's reveals at once, grouped by field: two device syncs per step instead of one per field
    candidates = (masked & app)[..., 1:].permute(2, 0, 1)  # (fields - 1, B, N)
    if structure is None:
        todo = _reveal(candidates, p, gen)
    else:
        rate = torch.where(structure[0], structure[1], p)
        todo = candidates & (torch.rand(candidates.shape, generator=gen, device=candidates.device) < rate)
    if confident is not None and (p if structure is None else structure[1]) < 1.0:
        todo[confident - 1] = _most_confident((masked & app)[..., confident], todo[confident - 1], parts[confident])
    counts = todo.sum(dim=(1, 2)).tolist()
    _, rows, cols = todo.nonzero(as_tuple=True)
    start = 0
    for j, k in enumerate(counts, start=1):
        if k:
            b, n = rows[start : start + k], cols[start : start + k]
            lg = parts[j][b, n].float()
            lg[:, 0] = float("-inf")  # a field the packet's kind carries is never absent
            tokens[b, n, j] = _gumbel_pick(lg, temperature, gen)
        start += k
    return tokens


def _most_confident(candidates: torch.Tensor, drawn: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per trace (row), as many of the ``candidates`` as ``drawn`` holds: those whose most likely token (absent
    aside) is the most probable."""
    conf = logits.float().log_softmax(-1)[..., 1:].amax(-1).masked_fill(~candidates, float("-inf"))
    rank = torch.empty_like(conf, dtype=torch.long)
    rank.scatter_(1, conf.argsort(dim=1, descending=True), torch.arange(conf.shape[1], device=conf.device)
                  .expand_as(rank).contiguous())
    return candidates & (rank < drawn.sum(dim=1, keepdim=True))


def _draw(target: torch.Tensor, todo: torch.Tensor, logits: torch.Tensor, temperature: float,
          gen: torch.Generator) -> None:
    """Write a categorical draw from ``logits`` into ``target`` where ``todo`` (only those rows are sampled)."""
    idx = todo.nonzero(as_tuple=True)
    if not len(idx[0]):
        return
    target[idx] = _gumbel_pick(logits[idx].float(), temperature, gen)


def _reveal(masked: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    if p >= 1.0:
        return masked
    return masked & (torch.rand(masked.shape, generator=gen, device=masked.device) < p)


def _ddim(x: torch.Tensor, x0: torch.Tensor, tf: float, sf: float) -> torch.Tensor:
    """Deterministic DDIM step of the inter-arrival feature from stage-2 time ``tf`` to ``sf``."""
    if sf >= tf:
        return x
    ab_t, ab_s = (alpha_bar(torch.tensor(v)).item() for v in (tf, sf))
    eps = (x - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)
    return math.sqrt(ab_s) * x0 + math.sqrt(max(0.0, 1 - ab_s)) * eps if sf > 0 else x0


def _guidance_labels(net: TokenDiT, labels: torch.Tensor, guidance: float) -> tuple[torch.Tensor, bool]:
    if guidance == 0.0:
        return torch.full_like(labels, net.null_class), False
    if guidance == 1.0:
        return labels, False
    return torch.cat([labels, torch.full_like(labels, net.null_class)]), True
