"""Building blocks of the ACE-Step v1 DiT (:mod:`acestep_app.acestep_v1.models.transformer`).

Rotary tables, the linear self-attention and softmax cross-attention, the GLUMBConv feed-forward and
the adaLN transformer block, in the official checkpoint's parameter names. ERG (entropy-rectifying
guidance) is a per-sample query factor passed down as an argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.normalization import RMSNorm
from torch import nn

ERG_SCALE = 0.01
LYRIC_ERG_LAYERS = (4, 5)
DIFFUSION_ERG_BLOCKS = (15, 16, 17, 18, 19)
PATCH_EMBED_HIDDEN = 2048  # fixed in the reference, independent of the config
FP16_MAX = 65504.0
# How the patch embedding and the feed-forwards run their convolutions (ACEStepTransformer2DModel.set_conv_impl).
CONV_IMPLS = ("gemm", "conv")

ErgFlag = bool | torch.Tensor | None


def erg_scale(erg: ErgFlag, batch_size: int, device: torch.device) -> torch.Tensor | None:
    """Per-sample query factor for ERG: fp32 ``(B, 1, 1)`` with 0.01 where ERG is on, else 1.

    ``erg`` is None/False (off: returns None), True (all samples) or a bool tensor ``(B,)``.
    """
    if erg is None or erg is False:
        return None
    if erg is True:
        return torch.full((batch_size, 1, 1), ERG_SCALE, dtype=torch.float32, device=device)
    if erg.dim() == 0:
        erg = erg.expand(batch_size)
    if erg.shape != (batch_size,):
        raise ValueError(f"per-sample ERG flags must have shape ({batch_size},), got {tuple(erg.shape)}")
    erg = erg.to(device=device, dtype=torch.bool)
    return torch.where(erg, ERG_SCALE, 1.0).to(torch.float32)[:, None, None]


def _scale_query(query: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    # fp32 factor then round back: bit-identical to the reference hook's `output * 0.01`.
    return query if scale is None else (query * scale).to(query.dtype)


class RotaryTables(nn.Module):
    """RoPE angle tables of the reference (Qwen2 "half" layout): ``ang[p, i] = p * inv_freq[i mod D/2]``.

    Tables are built in fp32 on CPU, rounded to the activation dtype (as the reference's cached,
    dtype-cast buffers are) and kept in fp32 for the fp32 rotation; cached per device and dtype.
    """

    def __init__(self, head_dim: int, max_position: int, theta: float):
        super().__init__()
        self.head_dim = head_dim
        self.max_position = max_position
        self.theta = theta
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def _build(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim
        inv_freq = 1.0 / (self.theta**exponents)
        positions = torch.arange(length, dtype=torch.int64).float()
        freqs = torch.outer(positions, inv_freq)
        angles = torch.cat((freqs, freqs), dim=-1)
        cos, sin = (t.to(dtype).to(device=device, dtype=torch.float32) for t in (angles.cos(), angles.sin()))
        return cos, sin

    def forward(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each fp32 ``(length, head_dim)``."""
        if torch.compiler.is_compiling():
            return self._build(length, device, dtype)  # a traced graph computes it; no python cache
        if length > self.max_position:
            raise ValueError(f"sequence length {length} exceeds max_position {self.max_position}")
        key = (torch.device(device), dtype)
        cached = self._cache.get(key)
        if cached is None or cached[0].shape[0] < length:
            grown = min(self.max_position, max(length, 2 * (cached[0].shape[0] if cached else 256)))
            cached = self._cache[key] = self._build(grown, device, dtype)
        return cached[0][:length], cached[1][:length]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x (..., N, D)`` pairing ADJACENT elements (2j, 2j+1) against the half-layout tables.

    Reproduces the reference quirk (spec §4.5): not a proper rotation, but what the weights expect.
    """
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, N, H*D) -> (B, H, N, D)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(2)


class LinearSelfAttention(nn.Module):
    """ReLU linear attention (Sana "LiteLA") with RoPE; the attention core runs in fp32."""

    def __init__(self, dim: int, heads: int, eps: float = 1e-15):
        super().__init__()
        self.heads = heads
        self.eps = eps
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x, mask, rope, q_scale=None):
        """x ``(B, T, C)``; mask ``(B, T)`` 0/1 in x's dtype; rope (cos, sin) for T positions."""
        query = _split_heads(_scale_query(self.to_q(x), q_scale), self.heads)
        key = _split_heads(self.to_k(x), self.heads)
        value = _split_heads(self.to_v(x), self.heads)
        query, key = apply_rotary(query, *rope), apply_rotary(key, *rope)

        token_mask = mask[:, None, :, None]
        query = F.relu(query * token_mask).float().transpose(-2, -1)  # (B, H, D, T)
        key = F.relu(key * token_mask).float()  # (B, H, T, D)
        value = (value * token_mask).float().transpose(-2, -1)  # (B, H, D, T)

        # One matmul chain gives numerator and denominator: a ones row under v makes the last output
        # row sum_n (k_n . q_t). Computed feature-major, (v k) q, as the reference does (same fp32 bits).
        value = F.pad(value, (0, 0, 0, 1), value=1.0)
        out = (value @ key) @ query  # (B, H, D + 1, T)
        out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        # Layout matters here (docs/fidelity.md): to_out gets a (B, T, C) view of (B, C, T) memory, as
        # in the reference. For such a non-contiguous 3-D input nn.Linear rounds the matmul and then
        # the bias add (two bf16 roundings) instead of one fused addmm.
        out = self.to_out[0](out.flatten(1, 2).transpose(1, 2).to(x.dtype))
        # The reference clamps to the fp16 range unconditionally (its fp16 check is always true).
        return out.clamp(-FP16_MAX, FP16_MAX)


class CrossAttention(nn.Module):
    """Softmax cross-attention (SDPA) with RoPE on queries (latent positions) and keys (encoder positions).

    ``add_q_proj``/``add_k_proj``/``add_v_proj``/``to_add_out`` exist only because the official
    checkpoint holds them; the forward never uses them.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.add_q_proj = nn.Linear(dim, dim)
        self.add_k_proj = nn.Linear(dim, dim)
        self.add_v_proj = nn.Linear(dim, dim)
        self.to_add_out = nn.Linear(dim, dim)

    def key_value(self, context: torch.Tensor, context_rope) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated keys and values of the encoder sequence ``(B, S, C)``, each ``(B, H, S, D)``."""
        key = apply_rotary(_split_heads(self.to_k(context), self.heads), *context_rope)
        return key, _split_heads(self.to_v(context), self.heads)

    def forward(self, x, context, query_mask, key_mask, rope, context_rope, q_scale=None, key_value=None):
        """x ``(B, T, C)``, context ``(B, S, C)``; query_mask ``(B, T)`` and key_mask ``(B, S)`` bool.

        ``key_value``: this layer's :meth:`key_value` of ``context`` computed earlier (``context`` is
        then not read).
        """
        query = apply_rotary(_split_heads(_scale_query(self.to_q(x), q_scale), self.heads), *rope)
        key, value = key_value if key_value is not None else self.key_value(context, context_rope)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask[:, None, None, :])
        # Masked latent frames see no key at all in the reference; SDPA gives them zeros there.
        out = out * query_mask[:, None, :, None].to(out.dtype)
        return self.to_out[0](_merge_heads(out))


class ConvLayer(nn.Module):
    """A 1-D conv stored as ``<name>.conv`` (channels-first)."""

    def __init__(self, in_channels, out_channels, kernel_size=1, groups=1, bias=True):
        super().__init__()
        padding = kernel_size // 2
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=padding, groups=groups, bias=bias)

    def forward(self, x):
        return self.conv(x)


class GLUMBConv(nn.Module):
    """Sana feed-forward: 1x1 expand + SiLU, depthwise k=3, GLU (first half * SiLU(second half)), 1x1 project.

    ``frame_mask`` (bool ``(B or 1, T)``, False on bucket padding) zeroes padded frames before the
    depthwise conv, so the last real frame sees a zero neighbour exactly as the conv's own padding.
    """

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.inverted_conv = ConvLayer(dim, 2 * hidden_dim)
        self.depth_conv = ConvLayer(2 * hidden_dim, 2 * hidden_dim, kernel_size=3, groups=2 * hidden_dim)
        self.point_conv = ConvLayer(hidden_dim, dim, bias=False)
        self.conv_impl = "gemm"

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.conv_impl == "conv":
            return self._forward_conv(x, frame_mask)
        # The 1x1 convs run as matmuls on (B, T, C): the conv's sums, but one GEMM instead of a
        # transposed-input convolution (CPU took the im2col path: batch 3 of 646 frames 2.5 s -> 2.0 s).
        y = F.silu(F.linear(x, self.inverted_conv.conv.weight[..., 0], self.inverted_conv.conv.bias))
        if frame_mask is not None:
            y = torch.where(frame_mask[:, :, None], y, 0.0)
        y, gate = self.depth_conv(y.transpose(1, 2)).transpose(1, 2).chunk(2, dim=-1)
        return F.linear(y * F.silu(gate), self.point_conv.conv.weight[..., 0])

    def _forward_conv(self, x: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        """The reference's kernels: every step a convolution on (B, C, T)."""
        y = F.silu(self.inverted_conv(x.transpose(1, 2)))
        if frame_mask is not None:
            y = torch.where(frame_mask[:, None, :], y, 0.0)
        y, gate = self.depth_conv(y).chunk(2, dim=1)
        return self.point_conv(y * F.silu(gate)).transpose(1, 2)


class LinearTransformerBlock(nn.Module):
    """adaLN-modulated linear self-attention, ungated cross-attention on the raw stream, GLUMBConv."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = RMSNorm(dim, eps=1e-6, elementwise_affine=False)
        self.attn = LinearSelfAttention(dim, heads)
        self.cross_attn = CrossAttention(dim, heads)
        self.norm2 = RMSNorm(dim, eps=1e-6, elementwise_affine=False)
        self.ff = GLUMBConv(dim, int(dim * mlp_ratio))
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(
        self, h, temb, mask, context, query_mask, key_mask, rope, context_rope, q_scale=None, frame_mask=None,
        cross_key_value=None,
    ):
        modulation = self.scale_shift_table[None] + temb.unflatten(1, (6, -1))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation.chunk(6, dim=1)
        n = self.norm1(h) * (1 + scale_msa) + shift_msa
        # Operand order as in the reference: the first add is led by the (contiguous) attention output,
        # which makes the residual stream contiguous even when block 0 receives the patch embedding's
        # transposed view; from then on every linear sees a contiguous input (fused bias in bf16).
        h = gate_msa * self.attn(n, mask, rope, q_scale) + h
        h = self.cross_attn(h, context, query_mask, key_mask, rope, context_rope, q_scale, cross_key_value) + h
        n = self.norm2(h) * (1 + scale_mlp) + shift_mlp
        return h + gate_mlp * self.ff(n, frame_mask)
