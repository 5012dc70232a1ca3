"""ACE-Step v1 DiT: ``ACEStepTransformer2DModel`` (checkpoint subfolder ``ace_step_transformer/``).

A Sana-style linear-attention transformer over latent frames. ``encode`` turns the conditioning
(UMT5 text states, speaker embedding, lyric ids) into one encoder sequence; ``decode`` is one
denoiser evaluation predicting the flow-matching velocity. Parameter names follow the official
checkpoint exactly, including modules the forward never uses (the cross-attention ``add_*`` /
``to_add_out`` projections and the SSL ``projectors``), so loading is strict.

ERG (entropy-rectifying guidance) scales query projections by 0.01. Here it is an argument, per
sample, instead of the reference's forward hooks, so guided passes can share one batched forward.

Shape buckets (``enable_shape_buckets``) pad latent frames and encoder tokens up to fixed multiples
inside ``decode`` so a compiled model sees few distinct shapes. Padding is masked out of every op
that mixes frames (GroupNorm statistics, linear attention, cross-attention keys, the depthwise conv),
so the real frames come out as in an unpadded run (to float rounding).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import RMSNorm
from torch import nn

from acestep_app.acestep_v1.models.dit_blocks import (
    CONV_IMPLS,
    GLUMBConv,
    LYRIC_ERG_LAYERS,
    DIFFUSION_ERG_BLOCKS,
    PATCH_EMBED_HIDDEN,
    ErgFlag,
    erg_scale,
    RotaryTables,
    LinearTransformerBlock,
)
from acestep_app.acestep_v1.models.loading import strict_from_pretrained
from acestep_app.acestep_v1.models.lyric_encoder import ConformerLyricEncoder

logger = logging.getLogger(__name__)

class PatchEmbed(nn.Module):
    """Collapse the 16-high latent axis: conv (16,1)/(16,1) -> GroupNorm(32) -> 1x1 conv; one token per frame."""

    def __init__(self, in_channels: int, dim: int, patch_size: tuple[int, int], height: int):
        super().__init__()
        if height != patch_size[0] or patch_size[1] != 1:
            raise ValueError(f"expected patch_size [max_height, 1], got {patch_size} with max_height {height}")
        self.early_conv_layers = nn.Sequential(
            nn.Conv2d(in_channels, PATCH_EMBED_HIDDEN, kernel_size=patch_size, stride=patch_size),
            nn.GroupNorm(32, PATCH_EMBED_HIDDEN, eps=1e-6),
            nn.Conv2d(PATCH_EMBED_HIDDEN, dim, kernel_size=1),
        )
        self.conv_impl = "gemm"

    def forward(self, latent: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The output's memory layout follows the latents' (docs/fidelity.md): contiguous latents give
        the transposed view the reference gives block 0, channels-last latents a contiguous stream."""
        conv, norm, project = self.early_conv_layers
        if self.conv_impl == "gemm":
            # A (16, 1) convolution with stride (16, 1) is one linear map per frame over its 8 x 16 values.
            patches = latent.flatten(1, 2).transpose(1, 2)
            x = F.linear(patches, conv.weight.flatten(1), conv.bias).transpose(1, 2)[:, :, None]
        else:
            x = conv(latent)
        x = norm(x) if frame_mask is None else group_norm_over_frames(norm, x, frame_mask)
        return project(x).flatten(2).transpose(1, 2)


def group_norm_over_frames(norm: nn.GroupNorm, x: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """``norm`` applied to ``x (B, C, 1, T)`` with statistics over the frames where ``frame_mask`` is True only.

    nn.GroupNorm pools over all frames; bucket padding must not shift the real frames' statistics.
    Computed in fp32 (as GroupNorm kernels accumulate) and cast back.
    """
    batch, channels, height, frames = x.shape
    grouped = x.float().reshape(batch, norm.num_groups, -1, frames)
    weight = frame_mask.float().reshape(-1, 1, 1, frames)
    count = weight.sum(dim=-1, keepdim=True) * grouped.shape[2] * height
    mean = (grouped * weight).sum(dim=(2, 3), keepdim=True) / count
    centered = (grouped - mean) * weight
    var = (centered * centered).sum(dim=(2, 3), keepdim=True) / count
    normed = ((grouped - mean) * torch.rsqrt(var + norm.eps)).reshape(x.shape)
    if norm.affine:
        normed = normed * norm.weight.float()[:, None, None] + norm.bias.float()[:, None, None]
    return normed.to(x.dtype)


class FinalLayer(nn.Module):
    """RMSNorm + (shift, scale) from the embedded timestep, linear to patch pixels, unpatchify."""

    def __init__(self, dim: int, patch_size: tuple[int, int], out_channels: int):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.out_channels = out_channels
        self.norm_final = RMSNorm(dim, eps=1e-6, elementwise_affine=False)
        self.linear = nn.Linear(dim, patch_size[0] * patch_size[1] * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)

    def forward(self, h: torch.Tensor, embedded_timestep: torch.Tensor, output_length: int) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + embedded_timestep[:, None]).chunk(2, dim=1)
        h = self.linear(self.norm_final(h) * (1 + scale) + shift)
        # token t's outputs are (p, q, c) with c fastest -> out[b, c, p, t*q_size + q]
        p, q = self.patch_size
        batch, frames = h.shape[:2]
        out = h.reshape(batch, frames, p, q, self.out_channels).permute(0, 4, 2, 1, 3)
        return _fit_length(out.reshape(batch, self.out_channels, p, frames * q), output_length)


def _fit_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Right-pad with zeros or crop the last axis to ``length``."""
    if length > x.shape[-1]:
        return F.pad(x, (0, length - x.shape[-1]))
    return x[..., :length]


def _pad_axis(x: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """Zero-pad ``x`` along ``dim`` up to ``length``."""
    extra = length - x.shape[dim]
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _check_key_values(key_values: CrossKeyValues, blocks: int, key_mask_shape: torch.Size) -> None:
    """Cached keys must fit this forward: one pair per block, the batch and (padded) token count of its mask."""
    if len(key_values) != blocks:
        raise ValueError(f"cross_key_values has {len(key_values)} entries for {blocks} blocks")
    key = key_values[0][0]
    if (key.shape[0], key.shape[2]) != tuple(key_mask_shape):
        raise ValueError(
            f"cross_key_values are for batch {key.shape[0]} x {key.shape[2]} tokens, "
            f"this forward has {tuple(key_mask_shape)} (shape buckets changed?)"
        )


CrossKeyValues = tuple[tuple[torch.Tensor, torch.Tensor], ...]  # one (key, value) per block


class CrossAttentionCache:
    """Every block's cross-attention keys and values, per encoder sequence, for ONE request.

    The encoder sequences of a request (one per guidance branch, or several branches concatenated
    for a batched forward) are fixed for all its steps, so each block's keys and values are computed
    on the first step that needs them and reused by every later step. Keys name the sequences (e.g.
    the tuple of guidance branch names): one key per distinct sequence. Create a new cache for every
    request; nothing here notices a changed sequence under the same key except a changed shape.
    """

    def __init__(self, transformer: ACEStepTransformer2DModel):
        self.transformer = transformer
        self._entries: dict[object, tuple[torch.Size, CrossKeyValues]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: object, encoder_hidden_states: torch.Tensor) -> CrossKeyValues:
        """The stored keys and values for ``key``, computed from ``encoder_hidden_states`` on first use."""
        entry = self._entries.get(key)
        if entry is None:
            key_values = self.transformer.cross_attention_key_values(encoder_hidden_states)
            entry = self._entries[key] = (encoder_hidden_states.shape, key_values)
        elif entry[0] != encoder_hidden_states.shape:
            raise ValueError(
                f"cross-attention cache entry {key!r} holds a {tuple(entry[0])} sequence, "
                f"got {tuple(encoder_hidden_states.shape)}: use one cache per request"
            )
        return entry[1]


class ACEStepTransformer2DModel(ModelMixin, ConfigMixin):
    """The ACE-Step v1 DiT (official config: 24 blocks, 20 heads x 128, 3.3 B parameters stored).

    Constructor keywords are the official ``config.json`` keys. The four ``lyric_encoder_*`` keys are
    not in the official config (the reference hard-codes 1024/16/4096/6); the tiny test checkpoint
    sets them. ``ssl_*`` and ``max_width`` only size the training-time ``projectors`` or are unused.
    """

    config_name = "config.json"
    _no_split_modules = ["LinearTransformerBlock", "ConformerEncoderLayer"]
    _repeated_blocks = ["LinearTransformerBlock"]  # diffusers regional compilation (compile_repeated_blocks)

    @register_to_config
    def __init__(
        self,
        in_channels: int = 8,
        num_layers: int = 24,
        inner_dim: int = 2560,
        attention_head_dim: int = 128,
        num_attention_heads: int = 20,
        mlp_ratio: float = 2.5,
        out_channels: int = 8,
        max_position: int = 32768,
        rope_theta: float = 1000000.0,
        speaker_embedding_dim: int = 512,
        text_embedding_dim: int = 768,
        ssl_encoder_depths: list[int] = (8, 8),
        ssl_names: list[str] = ("mert", "m-hubert"),
        ssl_latent_dims: list[int] = (1024, 768),
        lyric_encoder_vocab_size: int = 6693,
        lyric_hidden_size: int = 1024,
        patch_size: list[int] = (16, 1),
        max_height: int = 16,
        max_width: int = 32768,
        lyric_encoder_output_size: int = 1024,
        lyric_encoder_attention_heads: int = 16,
        lyric_encoder_linear_units: int = 4096,
        lyric_encoder_num_blocks: int = 6,
    ):
        super().__init__()
        dim = num_attention_heads * attention_head_dim  # the config's inner_dim is recomputed, as upstream
        self.inner_dim = dim
        patch_size = tuple(patch_size)

        self.rotary_emb = RotaryTables(attention_head_dim, max_position, rope_theta)
        self.proj_in = PatchEmbed(in_channels, dim, patch_size, max_height)
        self.time_proj = Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.timestep_embedder = TimestepEmbedding(in_channels=256, time_embed_dim=dim)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.speaker_embedder = nn.Linear(speaker_embedding_dim, dim)
        self.genre_embedder = nn.Linear(text_embedding_dim, dim)
        self.lyric_embs = nn.Embedding(lyric_encoder_vocab_size, lyric_hidden_size)
        self.lyric_encoder = ConformerLyricEncoder(
            input_size=lyric_hidden_size,
            output_size=lyric_encoder_output_size,
            attention_heads=lyric_encoder_attention_heads,
            linear_units=lyric_encoder_linear_units,
            num_blocks=lyric_encoder_num_blocks,
        )
        if lyric_encoder_output_size != lyric_hidden_size:
            raise ValueError(
                f"lyric_encoder_output_size ({lyric_encoder_output_size}) must equal "
                f"lyric_hidden_size ({lyric_hidden_size})"
            )
        self.lyric_proj = nn.Linear(lyric_hidden_size, dim)
        self.transformer_blocks = nn.ModuleList(
            LinearTransformerBlock(dim, num_attention_heads, mlp_ratio) for _ in range(num_layers)
        )
        self.final_layer = FinalLayer(dim, patch_size, out_channels)
        # Training-only SSL alignment heads; kept so the official checkpoint loads strictly.
        self.projectors = nn.ModuleList(
            nn.Sequential(
                nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, ssl_dim)
            )
            for ssl_dim in ssl_latent_dims
        )
        self.shape_buckets: tuple[int, int] | None = None

    def enable_shape_buckets(self, frames: int = 128, tokens: int = 64) -> None:
        """Pad ``decode`` inputs up to multiples of ``frames`` latent frames and ``tokens`` encoder tokens.

        For compiled models: durations (and prompt/lyric lengths) in one bucket share one graph.
        The padding is masked out, so real frames match an unpadded run to float rounding.
        """
        if frames < 1 or tokens < 1:
            raise ValueError(f"bucket sizes must be positive, got frames={frames}, tokens={tokens}")
        self.shape_buckets = (frames, tokens)

    def disable_shape_buckets(self) -> None:
        self.shape_buckets = None

    def set_conv_impl(self, impl: str) -> None:
        """How the patch embedding's strided convolution and the feed-forwards' 1x1 convolutions run.

        ``"gemm"`` (the default): as matrix products over (frames, channels), the same sums; faster on
        CPU, and clear of oneDNN 3.12's AMX convolution bug (:mod:`acestep_app.engine.cpu_kernels`).
        ``"conv"``: as torch convolutions, the reference's ops; with the reference's CPU kernels the
        bfloat16 output then equals the reference's bit for bit (docs/fidelity.md).
        """
        if impl not in CONV_IMPLS:
            raise ValueError(f"conv impl must be one of {CONV_IMPLS}, got {impl!r}")
        for module in self.modules():
            if isinstance(module, (PatchEmbed, GLUMBConv)):
                module.conv_impl = impl

    @property
    def conv_impl(self) -> str:
        return self.proj_in.conv_impl

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *args, device=None, **kwargs):
        """diffusers ``from_pretrained`` made strict: any missing, unexpected or mis-shaped key raises.

        Extra keyword ``device`` (e.g. ``"cuda"``) places the weights directly on that device
        (diffusers ``device_map``); ``torch_dtype`` casts while loading. Safetensors are memory-mapped.
        """
        return strict_from_pretrained(
            super().from_pretrained, pretrained_model_name_or_path, *args, name=cls.__name__, device=device, **kwargs
        )

    # -- conditioning --------------------------------------------------------------------------

    def encode_lyrics(
        self, lyric_token_idx: torch.Tensor, lyric_mask: torch.Tensor, erg_lyric: ErgFlag = None
    ) -> torch.Tensor:
        """Lyric ids ``(B, L)`` + mask -> projected lyric states ``(B, L, C)``; ERG on encoder blocks 4, 5."""
        scale = erg_scale(erg_lyric, lyric_token_idx.shape[0], lyric_token_idx.device)
        states = self.lyric_encoder(self.lyric_embs(lyric_token_idx), lyric_mask, scale, LYRIC_ERG_LAYERS)
        return self.lyric_proj(states)

    def encode(
        self,
        encoder_text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        speaker_embeds: torch.Tensor,
        lyric_token_idx: torch.Tensor,
        lyric_mask: torch.Tensor,
        erg_lyric: ErgFlag = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Build the encoder sequence ``[speaker (1) | text (L_text) | lyrics (L_lyr)]``.

        Args:
            encoder_text_hidden_states: UMT5 states ``(B, L_text, text_embedding_dim)``.
            text_attention_mask: ``(B, L_text)`` 0/1.
            speaker_embeds: ``(B, speaker_embedding_dim)`` (zeros in text2music).
            lyric_token_idx: ``(B, L_lyr)`` long; lyric_mask ``(B, L_lyr)`` 0/1.
            erg_lyric: None/False, True, or bool ``(B,)``: which samples get the lyric ERG.
        Returns:
            encoder_hidden_states ``(B, S, C)`` in the model dtype and its float32 mask ``(B, S)``.
        """
        speaker = self.speaker_embedder(speaker_embeds)[:, None]
        text = self.genre_embedder(encoder_text_hidden_states)
        lyrics = self.encode_lyrics(lyric_token_idx, lyric_mask, erg_lyric)
        states = torch.cat([speaker, text, lyrics], dim=1)
        speaker_mask = torch.ones(speaker.shape[0], 1, device=speaker.device, dtype=torch.float32)
        mask = torch.cat([speaker_mask, text_attention_mask.float(), lyric_mask.float()], dim=1)
        return states, mask

    # -- denoiser ------------------------------------------------------------------------------

    def _padded_tokens(self, tokens: int) -> int:
        return tokens if self.shape_buckets is None else _round_up(tokens, self.shape_buckets[1])

    def cross_attention_key_values(self, encoder_hidden_states: torch.Tensor) -> CrossKeyValues:
        """Every block's cross-attention ``(key, value)`` of ``encoder_hidden_states (B, S, C)``.

        Each is ``(B, heads, S', head_dim)``, keys rotated, with ``S'`` the token count ``decode``
        runs at (S padded up to the token bucket when shape buckets are on). Pass the result to
        ``decode`` as ``cross_key_values`` (see :class:`CrossAttentionCache`).
        """
        states = _pad_axis(encoder_hidden_states, 1, self._padded_tokens(encoder_hidden_states.shape[1]))
        rope = self.rotary_emb(states.shape[1], states.device, states.dtype)
        return tuple(block.cross_attn.key_value(states, rope) for block in self.transformer_blocks)

    def decode(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_mask: torch.Tensor,
        timestep: torch.Tensor,
        output_length: int,
        erg_diffusion: ErgFlag = None,
        cross_key_values: CrossKeyValues | None = None,
    ) -> torch.Tensor:
        """One denoiser evaluation: the flow-matching velocity.

        Args:
            hidden_states: noisy latents ``(B, 8, 16, T)``; attention_mask ``(B, T)`` 0/1.
            encoder_hidden_states, encoder_hidden_mask: from :meth:`encode`, ``(B, S, C)``, ``(B, S)``.
            timestep: ``(B,)`` sigma * 1000, float32 even when the model runs in bf16 (as in the
                reference; bf16 cannot hold e.g. 937.5).
            output_length: frames of the output (zero-padded or cropped to it).
            erg_diffusion: None/False, True, or bool ``(B,)``: which samples get the diffusion ERG.
            cross_key_values: :meth:`cross_attention_key_values` of ``encoder_hidden_states``, computed
                once per request; None computes them here (the same numbers).
        Returns:
            ``(B, out_channels, 16, output_length)`` in the latents' dtype.
        """
        frames = hidden_states.shape[-1]
        frame_mask = None
        if self.shape_buckets is not None:
            padded = _round_up(frames, self.shape_buckets[0])
            tokens = self._padded_tokens(encoder_hidden_states.shape[1])
            hidden_states = _pad_axis(hidden_states, -1, padded)
            attention_mask = _pad_axis(attention_mask, 1, padded)
            encoder_hidden_states = _pad_axis(encoder_hidden_states, 1, tokens)
            encoder_hidden_mask = _pad_axis(encoder_hidden_mask, 1, tokens)
            frame_mask = (torch.arange(padded, device=hidden_states.device) < frames)[None]

        dtype, device = hidden_states.dtype, hidden_states.device
        embedded_timestep = self.timestep_embedder(self.time_proj(timestep).to(dtype))
        temb = self.t_block(embedded_timestep)
        h = self.proj_in(hidden_states, frame_mask)

        rope = self.rotary_emb(h.shape[1], device, h.dtype)
        context_rope = self.rotary_emb(encoder_hidden_states.shape[1], device, encoder_hidden_states.dtype)
        mask = attention_mask.to(h.dtype)
        query_mask, key_mask = attention_mask.bool(), encoder_hidden_mask.bool()
        scale = erg_scale(erg_diffusion, h.shape[0], device)
        if cross_key_values is None:
            cross_key_values = (None,) * len(self.transformer_blocks)
        else:
            _check_key_values(cross_key_values, len(self.transformer_blocks), key_mask.shape)
        for index, (block, key_value) in enumerate(zip(self.transformer_blocks, cross_key_values)):
            block_scale = scale if index in DIFFUSION_ERG_BLOCKS else None
            h = block(
                h, temb, mask, encoder_hidden_states, query_mask, key_mask, rope, context_rope, block_scale, frame_mask,
                key_value,
            )
        if frame_mask is None:
            return self.final_layer(h, embedded_timestep, output_length)
        return _fit_length(self.final_layer(h, embedded_timestep, frames), output_length)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        encoder_text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        speaker_embeds: torch.Tensor,
        lyric_token_idx: torch.Tensor,
        lyric_mask: torch.Tensor,
        timestep: torch.Tensor,
    ) -> torch.Tensor:
        """``encode`` then ``decode`` with ``output_length = T``."""
        context, context_mask = self.encode(
            encoder_text_hidden_states, text_attention_mask, speaker_embeds, lyric_token_idx, lyric_mask
        )
        return self.decode(
            hidden_states, attention_mask, context, context_mask, timestep, output_length=hidden_states.shape[-1]
        )
