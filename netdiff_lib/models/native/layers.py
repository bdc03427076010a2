"""The transformer every native network is built on: sinusoidal embeddings, adaLN-Zero blocks, :class:`Trunk`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from netdiff_lib.config import ModelConfig


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of a (float) timestep or length, shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Embedder(nn.Module):
    """Sinusoidal features -> 2-layer MLP (timesteps, lengths)."""

    def __init__(self, d: int, n_freq: int = 256) -> None:
        super().__init__()
        self.n_freq = n_freq
        self.mlp = nn.Sequential(nn.Linear(n_freq, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.n_freq))


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-Zero modulation from the conditioning vector."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, hidden = cfg.d_model, int(cfg.d_model * cfg.mlp_ratio)
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.qkv(h).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        drop = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        x = x + gate1 * self.proj(a.transpose(1, 2).reshape(b, n, d))
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * F.dropout(self.mlp(h), drop, self.training)


class Trunk(nn.Module):
    """What a representation's network builds on: learned positions, the conditioning vector (noise level +
    trace length + class, one extra "null" class for classifier-free guidance), adaLN-Zero blocks with a
    key-padding mask and the modulated output head (zero-initialised)."""

    def __init__(self, cfg: ModelConfig, n_classes: int, n_out: int) -> None:
        super().__init__()
        d = cfg.d_model
        self.cfg, self.n_classes = cfg, n_classes
        self.pos = nn.Parameter(torch.randn(cfg.max_packets, d) * 0.02)
        self.t_embed = Embedder(d)
        self.len_embed = Embedder(d)
        self.y_embed = nn.Embedding(n_classes + 1, d)  # index n_classes = "no class" (guidance)
        nn.init.normal_(self.y_embed.weight, std=1.0)  # as strong as the timestep embedding from the start
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.head = nn.Linear(d, n_out)
        for layer in (self.final_ada[1], self.head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def null_class(self) -> int:
        return self.n_classes

    def trunk(self, h: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor,
              padded: bool) -> torch.Tensor:
        """Packet embeddings ``h`` (B, N, d) -> head outputs (B, N, n_out) float32; ``t`` already scaled."""
        n = h.shape[1]
        if n > self.cfg.max_packets:
            raise ValueError(f"{n} packets exceed the model's max_packets={self.cfg.max_packets}")
        c = self.t_embed(t) + self.len_embed(lengths) + self.y_embed(labels)
        mask = None
        if padded:
            mask = (torch.arange(n, device=h.device)[None] < lengths[:, None])[:, None, None, :]
        h = h + self.pos[:n][None]
        for block in self.blocks:
            h = block(h, c, mask)
        shift, scale = self.final_ada(c)[:, None].chunk(2, dim=-1)
        return self.head(self.norm(h) * (1 + scale) + shift).float()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
