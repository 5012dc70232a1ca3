# The mel filterbank (slaney_mel_filterbank and its mel scale) follows torchaudio's melscale_fbanks
# with mel_scale="slaney" and norm="slaney" (github.com/pytorch/audio,
# torchaudio/functional/functional.py), so that the numbers equal torchaudio's. torchaudio's licence:
#
# BSD 2-Clause License
#
# Copyright (c) 2017 Facebook Inc. (Soumith Chintala),
# All rights reserved.
#
# Redistribution and use in source and binary forms, with or without
# modification, are permitted provided that the following conditions are met:
#
# * Redistributions of source code must retain the above copyright notice, this
#   list of conditions and the following disclaimer.
#
# * Redistributions in binary form must reproduce the above copyright notice,
#   this list of conditions and the following disclaimer in the documentation
#   and/or other materials provided with the distribution.
#
# THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
# AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
# IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
# DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
# FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
# DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
# SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
# CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
# OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
# OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.

"""ACE-Step's mel vocoder (checkpoint subfolder ``music_vocoder/``, class ``ADaMoSHiFiGANV1``).

A 1-D ConvNeXt encoder (``backbone``) refines a 128-bin natural-log mel spectrogram, then a HiFi-GAN
generator (``head``) upsamples it 512x to a waveform in [-1, 1] at 44.1 kHz. ``mel_transform`` is the
matching log-mel front end (only needed to encode audio). Constructor keywords are the official
``config.json`` keys and parameter names follow the official checkpoint, including the legacy
weight-norm pairs ``weight_g`` / ``weight_v``, so loading is strict.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from acestep_app.acestep_v1.models.loading import strict_from_pretrained

LAYER_NORM_EPS = 1e-6
STFT_MAGNITUDE_EPS = 1e-6
LOG_MEL_FLOOR = 1e-5


# -- backbone (ConvNeXt) ------------------------------------------------------------------------


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a (B, C, T) tensor."""

    def __init__(self, channels: int, eps: float = LAYER_NORM_EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        variance = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(variance + self.eps)
        return self.weight[:, None] * x + self.bias[:, None]


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> LayerNorm -> MLP (x4, exact GELU) -> layer scale ``gamma``; residual optional."""

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.pwconv2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return (self.gamma * y).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class ParallelConvNeXtBlock(nn.Module):
    """Several ConvNeXt branches with different kernel sizes summed onto one residual."""

    def __init__(self, dim: int, kernel_sizes: list[int]):
        super().__init__()
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, k) for k in kernel_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + sum(block.branch(x) for block in self.blocks)


class ConvNeXtEncoder(nn.Module):
    def __init__(self, input_channels: int, depths: list[int], dims: list[int], kernel_sizes: list[int]):
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(f"depths {depths} and dims {dims} must have the same length")
        stem = nn.Sequential(
            nn.Conv1d(input_channels, dims[0], kernel_size=7, padding=3, padding_mode="replicate"),
            ChannelsFirstLayerNorm(dims[0]),
        )
        transitions = (
            nn.Sequential(ChannelsFirstLayerNorm(dims[i]), nn.Conv1d(dims[i], dims[i + 1], kernel_size=1))
            for i in range(len(dims) - 1)
        )
        self.channel_layers = nn.ModuleList([stem, *transitions])

        def block(dim: int) -> nn.Module:
            if len(kernel_sizes) == 1:
                return ConvNeXtBlock(dim, kernel_sizes[0])
            return ParallelConvNeXtBlock(dim, kernel_sizes)

        self.stages = nn.ModuleList(
            nn.Sequential(*(block(dim) for _ in range(depth))) for depth, dim in zip(depths, dims)
        )
        self.norm = ChannelsFirstLayerNorm(dims[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for channel_layer, stage in zip(self.channel_layers, self.stages):
            x = stage(channel_layer(x))
        return self.norm(x)


# -- head (HiFi-GAN) ----------------------------------------------------------------------------


class WeightNormConv1d(nn.Module):
    """Conv1d / ConvTranspose1d whose weight is ``weight_g * weight_v / ||weight_v||`` (norm over all dims but 0).

    Stores the legacy ``torch.nn.utils.weight_norm`` parameter names. The effective weight is computed
    in float32 and cast, so bf16 models keep an accurate weight.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        transposed: bool = False,
    ):
        super().__init__()
        shape = (in_channels, out_channels, kernel_size) if transposed else (out_channels, in_channels, kernel_size)
        self.weight_v = nn.Parameter(torch.randn(shape) * 0.01)  # HiFi-GAN's N(0, 0.01) init, split in g and v
        self.weight_g = nn.Parameter(self.weight_v.detach().pow(2).sum(dim=(1, 2), keepdim=True).sqrt())
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.stride, self.padding, self.dilation, self.transposed = stride, padding, dilation, transposed

    def weight(self) -> torch.Tensor:
        v = self.weight_v.float()
        norm = v.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
        return (v * (self.weight_g.float() / norm)).to(self.weight_v.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return F.conv_transpose1d(x, self.weight(), self.bias, stride=self.stride, padding=self.padding)
        return F.conv1d(x, self.weight(), self.bias, stride=self.stride, padding=self.padding, dilation=self.dilation)


def _same_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


class ResBlock(nn.Module):
    """HiFi-GAN ResBlock1: per dilation, SiLU -> dilated conv -> SiLU -> conv, added to the input."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            WeightNormConv1d(channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            WeightNormConv1d(channels, channels, kernel_size, padding=_same_padding(kernel_size)) for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2):
            x = x + conv2(F.silu(conv1(F.silu(x))))
        return x


class HiFiGANGenerator(nn.Module):
    def __init__(
        self,
        num_mels: int,
        upsample_initial_channel: int,
        upsample_rates: list[int],
        upsample_kernel_sizes: list[int],
        resblock_kernel_sizes: list[int],
        resblock_dilation_sizes: list[list[int]],
        pre_conv_kernel_size: int,
        post_conv_kernel_size: int,
    ):
        super().__init__()
        channels = [upsample_initial_channel // 2**i for i in range(len(upsample_rates) + 1)]
        self.conv_pre = WeightNormConv1d(
            num_mels, channels[0], pre_conv_kernel_size, padding=_same_padding(pre_conv_kernel_size)
        )
        self.ups = nn.ModuleList(
            WeightNormConv1d(channels[i], channels[i + 1], k, stride=u, padding=(k - u) // 2, transposed=True)
            for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes))
        )
        self.resblocks = nn.ModuleList(
            ResBlock(channels[i + 1], k, d)
            for i in range(len(upsample_rates))
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes)
        )
        self.kernels_per_stage = len(resblock_kernel_sizes)
        self.conv_post = WeightNormConv1d(
            channels[-1], 1, post_conv_kernel_size, padding=_same_padding(post_conv_kernel_size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        n = self.kernels_per_stage
        for i, up in enumerate(self.ups):
            x = up(F.silu(x))
            blocks = self.resblocks[i * n : (i + 1) * n]
            total = blocks[0](x)
            for block in blocks[1:]:
                total = total + block(x)
            x = total / n
        return torch.tanh(self.conv_post(F.silu(x)))


# -- log-mel front end ---------------------------------------------------------------------------


def _hz_to_slaney_mel(hz: float) -> float:
    linear_step = 200.0 / 3
    if hz < 1000.0:
        return hz / linear_step
    return 1000.0 / linear_step + math.log(hz / 1000.0) / (math.log(6.4) / 27.0)


def _slaney_mel_to_hz(mels: torch.Tensor) -> torch.Tensor:
    linear_step = 200.0 / 3
    log_start = 1000.0 / linear_step
    log_step = math.log(6.4) / 27.0
    return torch.where(mels >= log_start, 1000.0 * torch.exp(log_step * (mels - log_start)), linear_step * mels)


def slaney_mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """(n_freqs, n_mels) triangular filters on the Slaney mel scale with Slaney area normalisation, float32."""
    freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    mel_points = torch.linspace(_hz_to_slaney_mel(f_min), _hz_to_slaney_mel(f_max), n_mels + 2)
    hz_points = _slaney_mel_to_hz(mel_points)
    widths = hz_points[1:] - hz_points[:-1]
    offsets = hz_points[None, :] - freqs[:, None]
    rising = -offsets[:, :-2] / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return filters * (2.0 / (hz_points[2:] - hz_points[:-2]))[None, :]


class LinearSpectrogram(nn.Module):
    """STFT magnitude (Hann window, no centring, reflect-padded by (win - hop) / 2 each side), float32."""

    def __init__(self, n_fft: int, win_length: int, hop_length: int):
        super().__init__()
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.register_buffer("window", torch.hann_window(win_length))

    def forward(self, wave: torch.Tensor, window_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Magnitudes in float32; ``window_dtype`` rounds the Hann window first (a bf16 model stores it so)."""
        pad = self.win_length - self.hop_length
        wave = F.pad(wave.float()[:, None], (pad // 2, (pad + 1) // 2), mode="reflect")[:, 0]
        spec = torch.stft(
            wave,
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(window_dtype).float(),
            center=False,
            onesided=True,
            return_complex=True,
        )
        return torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + STFT_MAGNITUDE_EPS)


class MelScale(nn.Module):
    def __init__(self, n_mels: int, sample_rate: int, f_min: float, f_max: float, n_freqs: int):
        super().__init__()
        self.register_buffer("fb", slaney_mel_filterbank(n_freqs, f_min, f_max, n_mels, sample_rate))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return torch.matmul(spec.transpose(-1, -2), self.fb.to(spec.dtype)).transpose(-1, -2)


class LogMelSpectrogram(nn.Module):
    """Waveform (B, N) at 44.1 kHz -> natural-log mel (B, n_mels, N / hop), float32 by default.

    ``dtype`` (the audio encoder's precision): the magnitudes are rounded to it and the filterbank
    projection and log run in it, with the window rounded to it too, as in a reference model cast
    to bf16 as a whole.
    """

    def __init__(self, sample_rate: int, n_fft: int, win_length: int, hop_length: int, n_mels: int, f_min, f_max):
        super().__init__()
        self.spectrogram = LinearSpectrogram(n_fft, win_length, hop_length)
        self.mel_scale = MelScale(n_mels, sample_rate, f_min, f_max or sample_rate // 2, n_fft // 2 + 1)

    def forward(self, wave: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if wave.ndim == 3:
            wave = wave[:, 0]
        magnitudes = self.spectrogram(wave, window_dtype=dtype).to(dtype)
        return torch.log(torch.clamp(self.mel_scale(magnitudes), min=LOG_MEL_FLOOR))


# -- the model -----------------------------------------------------------------------------------


class ADaMoSHiFiGANV1(ModelMixin, ConfigMixin):
    """Log-mel (B, 128, F) -> waveform (B, 1, 512 F). Official config: 103 M parameters.

    ``drop_path_rate`` is a training option (stochastic depth) and has no effect at inference;
    ``use_template`` (a noise-template branch) is off in the official config and not supported.
    """

    config_name = "config.json"
    _keep_in_fp32_modules = ["mel_transform"]

    @register_to_config
    def __init__(
        self,
        input_channels: int = 128,
        depths: list[int] = (3, 3, 9, 3),
        dims: list[int] = (128, 256, 384, 512),
        drop_path_rate: float = 0.0,
        kernel_sizes: list[int] = (7,),
        upsample_rates: list[int] = (4, 4, 2, 2, 2, 2, 2),
        upsample_kernel_sizes: list[int] = (8, 8, 4, 4, 4, 4, 4),
        resblock_kernel_sizes: list[int] = (3, 7, 11, 13),
        resblock_dilation_sizes: list[list[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5), (1, 3, 5)),
        num_mels: int = 512,
        upsample_initial_channel: int = 1024,
        use_template: bool = False,
        pre_conv_kernel_size: int = 13,
        post_conv_kernel_size: int = 13,
        sampling_rate: int = 44100,
        n_fft: int = 2048,
        win_length: int = 2048,
        hop_length: int = 512,
        f_min: int = 40,
        f_max: int = 16000,
        n_mels: int = 128,
    ):
        super().__init__()
        if use_template:
            raise ValueError("use_template=True (noise-template HiFi-GAN) is not supported")
        if math.prod(upsample_rates) != hop_length:
            raise ValueError(f"upsample_rates {list(upsample_rates)} must multiply to hop_length {hop_length}")
        self.backbone = ConvNeXtEncoder(input_channels, list(depths), list(dims), list(kernel_sizes))
        self.head = HiFiGANGenerator(
            num_mels=num_mels,
            upsample_initial_channel=upsample_initial_channel,
            upsample_rates=list(upsample_rates),
            upsample_kernel_sizes=list(upsample_kernel_sizes),
            resblock_kernel_sizes=list(resblock_kernel_sizes),
            resblock_dilation_sizes=[list(d) for d in resblock_dilation_sizes],
            pre_conv_kernel_size=pre_conv_kernel_size,
            post_conv_kernel_size=post_conv_kernel_size,
        )
        self.mel_transform = LogMelSpectrogram(sampling_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max)
        self.eval()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *args, device=None, **kwargs):
        """Strict diffusers loading: a missing, unexpected or mis-shaped key raises ``WeightsError``."""
        return strict_from_pretrained(
            super().from_pretrained, pretrained_model_name_or_path, *args, name=cls.__name__, device=device, **kwargs
        )

    @torch.no_grad()
    def decode(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, n_mels, F) -> waveform (B, 1, hop_length * F) in the model dtype."""
        return self.forward(mel)

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveform (B, N) or (B, 1, N) at ``sampling_rate`` -> log-mel (B, n_mels, N / hop_length), float32."""
        return self.mel_transform(wave)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(mel.to(self.dtype)))
