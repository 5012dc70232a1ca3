# The sinc filters and their strided application follow torchaudio's _get_sinc_resample_kernel and
# _apply_sinc_resample_kernel (github.com/pytorch/audio, torchaudio/functional/functional.py), so
# that the numbers equal torchaudio's. torchaudio's licence:
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

"""Band-limited resampling numerically equal to ``torchaudio.transforms.Resample``'s default.

Windowed-sinc interpolation with a Hann window, 6 zero crossings and a cut-off at 0.99 of the lower
Nyquist frequency. The rates are reduced by their gcd (44100 -> 48000 is 147 -> 160), so each block
of ``orig`` input samples yields ``new`` output samples through one strided convolution with ``new``
filters. Filters are built as torchaudio builds them (float64 but for its float32 output phases) and
applied in float32; ``dtype`` applies them in another precision instead (the reference encodes audio
with the resampler cast to bf16).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F


@lru_cache(maxsize=8)
def _sinc_filters(orig: int, new: int, zero_crossings: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """(new, 1, 2 * width + orig) float32 filters and the half-width ``width`` in input samples.

    Computed as torchaudio computes its default kernel, roundings included: the output phases
    ``-j / new`` in float32 (an integer range divided by ``new``), everything else in float64, the
    window times the gain before it multiplies the sinc. A bfloat16 resampler rounds these float32
    taps once more, and the last float32 bits decide ties there (docs/fidelity.md).
    """
    cutoff = min(orig, new) * rolloff
    width = math.ceil(zero_crossings * orig / cutoff)
    input_offsets = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    output_offsets = torch.arange(0, -new, -1)[:, None, None] / new  # float32, as torchaudio's
    t = ((output_offsets + input_offsets) * cutoff).clamp(-zero_crossings, zero_crossings)
    window = torch.cos(t * math.pi / zero_crossings / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    return (sinc * (window * (cutoff / orig))).to(torch.float32), width


def resampled_length(length: int, orig_freq: int, new_freq: int) -> int:
    """Output samples for ``length`` input samples: ceil(length * new / orig)."""
    return -(-length * new_freq // orig_freq)


def resample(
    wave: torch.Tensor,
    orig_freq: int,
    new_freq: int,
    *,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
    block_samples: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Resample the last axis of ``wave`` from ``orig_freq`` to ``new_freq`` Hz, computing in ``dtype``.

    ``block_samples`` bounds working memory: the input is convolved in blocks of about that many
    samples (same result, the blocks carry their filter margins). ``device`` runs the convolution
    there (default: where ``wave`` is); the result is returned on ``wave``'s device.
    """
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_freq} -> {new_freq}")
    wave = wave.to(dtype)
    if orig_freq == new_freq:
        return wave
    divisor = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // divisor, int(new_freq) // divisor
    filters, width = _sinc_filters(orig, new, lowpass_filter_width, rolloff)
    work_device = torch.device(device) if device is not None else wave.device
    filters = filters.to(work_device, dtype)

    shape, length = wave.shape[:-1], wave.shape[-1]
    flat = F.pad(wave.reshape(-1, length), (width, width + orig))
    groups = length // orig + 1  # output blocks of ``new`` samples the padded input supports
    per_block = groups if block_samples is None else max(1, block_samples // orig)
    pieces = []
    for first in range(0, groups, per_block):
        last = min(groups, first + per_block)
        chunk = flat[:, first * orig : (last - 1) * orig + filters.shape[-1]].to(work_device)
        out = F.conv1d(chunk[:, None], filters, stride=orig)  # (rows, new, blocks)
        pieces.append(out.transpose(1, 2).reshape(out.shape[0], -1).to(wave.device))
    out = torch.cat(pieces, dim=-1)[:, : resampled_length(length, orig, new)]
    return out.reshape(*shape, out.shape[-1])
