"""Conformer lyric encoder of ACE-Step v1.

Lives inside the DiT checkpoint (``ace_step_transformer/``) under the state-dict prefix
``lyric_encoder.``. It is a wenet/ESPnet Conformer without convolution module and without macaron
feed-forward: pre-norm blocks of relative-position self-attention (Transformer-XL style, ESPnet
relative positional encoding) and a SiLU feed-forward. Dropout is omitted (inference only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def relative_positional_encoding(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """ESPnet relative positional table of shape ``(1, 2*length - 1, dim)``.

    Row ``k`` encodes the relative distance ``r = (length - 1) - k`` (from ``+(length-1)`` down to
    ``-(length-1)``): ``[2i] = sin(r * w_i)``, ``[2i+1] = cos(r * w_i)``, ``w_i = 10000^(-2i/dim)``.
    Built in fp32 and cast to ``dtype``, as the reference does.
    """
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    distance = torch.arange(length - 1, -length, -1, dtype=torch.float32)
    angles = distance[:, None] * inv_freq[None, :]
    table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)
    return table.unsqueeze(0).to(device=device, dtype=dtype)


def _rel_shift(scores: torch.Tensor) -> torch.Tensor:
    """Turn ``(B, H, L, 2L-1)`` scores against relative rows into ``(B, H, L, L)`` query/key scores.

    Entry ``[i, j]`` takes row ``(L-1) - i + j``, i.e. relative distance ``i - j``.
    """
    length = scores.shape[-2]
    positions = torch.arange(length, device=scores.device)
    index = (length - 1) - positions[:, None] + positions[None, :]
    return scores.gather(-1, index.expand(*scores.shape[:-2], length, length))


class LinearNoSubsampling(nn.Module):
    """Input projection ``embed.out = [Linear, LayerNorm]``, then the ``sqrt(dim)`` scaling of the pos-enc."""

    def __init__(self, input_size: int, output_size: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(input_size, output_size), nn.LayerNorm(output_size, eps=1e-5))
        self.xscale = math.sqrt(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x) * self.xscale


class RelPositionMultiHeadedAttention(nn.Module):
    """Self-attention with learned content (``pos_bias_u``) and position (``pos_bias_v``) biases."""

    def __init__(self, num_heads: int, dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(num_heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.zeros(num_heads, self.head_dim))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim))

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor,
        pos_emb: torch.Tensor,
        q_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x ``(B, L, C)``; key_mask ``(B, L)`` bool (True = valid); pos_emb ``(1, 2L-1, C)``;
        q_scale: optional fp32 ``(B, 1, 1)`` factor on the ``linear_q`` output (ERG)."""
        query = self.linear_q(x)
        if q_scale is not None:
            query = (query * q_scale).to(x.dtype)
        query = self._heads(query)  # (B, L, H, D): the biases broadcast over (H, D)
        key = self._heads(self.linear_k(x)).transpose(1, 2)
        value = self._heads(self.linear_v(x)).transpose(1, 2)
        pos = self._heads(self.linear_pos(pos_emb)).transpose(1, 2)

        # Each step below is its own op, rounded to the activation dtype, in the reference's order
        # (docs/fidelity.md): in bfloat16 a fused kernel (SDPA) rounds differently and moves the
        # lyric states enough to change the whole trajectory.
        query_u = (query + self.pos_bias_u).transpose(1, 2)
        query_v = (query + self.pos_bias_v).transpose(1, 2)
        content_scores = query_u @ key.transpose(-2, -1)
        position_scores = _rel_shift(query_v @ pos.transpose(-2, -1))
        scores = (content_scores + position_scores) / math.sqrt(self.head_dim)
        # Padded keys get -inf and, after the softmax, exactly 0 (an item without valid keys gets
        # all-zero weights instead of NaN).
        masked = ~key_mask[:, None, None, :]
        weights = torch.softmax(scores.masked_fill(masked, float("-inf")), dim=-1).masked_fill(masked, 0.0)
        out = weights @ value
        return self.linear_out(out.transpose(1, 2).flatten(2))


class PositionwiseFeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden_dim)
        self.w_2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerEncoderLayer(nn.Module):
    """Pre-norm block: ``x + RelMHA(LN(x))`` then ``x + FFN(LN(x))`` (no conv module, no macaron)."""

    def __init__(self, dim: int, num_heads: int, linear_units: int):
        super().__init__()
        self.self_attn = RelPositionMultiHeadedAttention(num_heads, dim)
        self.feed_forward = PositionwiseFeedForward(dim, linear_units)
        self.norm_ff = nn.LayerNorm(dim, eps=1e-5)
        self.norm_mha = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x, key_mask, pos_emb, q_scale=None):
        x = x + self.self_attn(self.norm_mha(x), key_mask, pos_emb, q_scale)
        return x + self.feed_forward(self.norm_ff(x))


class ConformerLyricEncoder(nn.Module):
    """The lyric Conformer (reference sizes: 1024 wide, 16 heads, FFN 4096, 6 blocks).

    ``forward(x, mask, q_scale=None, q_scale_layers=())`` with x the lyric token embeddings
    ``(B, L, input_size)`` and mask ``(B, L)`` (nonzero = valid token) returns ``(B, L, output_size)``.
    Padded positions are computed too (the mask only hides them as keys). ``q_scale`` (fp32
    ``(B, 1, 1)``) multiplies the ``linear_q`` output of the blocks listed in ``q_scale_layers``.
    """

    def __init__(
        self,
        input_size: int = 1024,
        output_size: int = 1024,
        attention_heads: int = 16,
        linear_units: int = 4096,
        num_blocks: int = 6,
    ):
        super().__init__()
        self.output_size = output_size
        self.embed = LinearNoSubsampling(input_size, output_size)
        self.encoders = nn.ModuleList(
            ConformerEncoderLayer(output_size, attention_heads, linear_units) for _ in range(num_blocks)
        )
        self.after_norm = nn.LayerNorm(output_size, eps=1e-5)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        q_scale: torch.Tensor | None = None,
        q_scale_layers: tuple[int, ...] = (),
    ) -> torch.Tensor:
        key_mask = mask.bool()
        x = self.embed(x)
        pos_emb = relative_positional_encoding(x.shape[1], self.output_size, x.device, x.dtype)
        for index, layer in enumerate(self.encoders):
            x = layer(x, key_mask, pos_emb, q_scale if index in q_scale_layers else None)
        return self.after_norm(x)
