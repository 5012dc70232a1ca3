"""Which kernels run bfloat16 on an x86 CPU: the reference's, or the CPU's fastest.

PyTorch runs CPU bfloat16 matmuls and convolutions through oneDNN, and float32 matmuls and FFTs through
MKL; both pick the widest instruction set the CPU offers. The reference's bfloat16 numbers
(``fixtures/acestep-v1-tiny-bf16``) come from an AMD Zen 4 CPU, where that is AVX512-BF16 for oneDNN
and MKL's AVX-512 (non-Intel) code paths. On an Intel Xeon with AMX (Sapphire Rapids and later) the
defaults differ, measured with torch 2.13 (oneDNN 3.12, MKL 2024.2):

* oneDNN's AMX kernels accumulate in another order, so every bfloat16 GEMM rounds differently, and a
  bfloat16 diffusion trajectory grows one different rounding into a different rendering of the song;
  they are also about 10x faster for the DiT's GEMMs;
* oneDNN's AMX convolution is wrong for the DiT's patch embedding (a 16x1 convolution with stride 16
  and 2048 output channels): outputs off by as much as their own size for most frame counts (the
  brgemm convolution scratch-buffer bug fixed upstream in uxlfoundation/oneDNN#5494);
* MKL's default (AMX-era) float32 GEMM kernels round some of the DiT's float32 attention sums
  differently from its AVX-512 ones.

``[engine] cpu_bf16_kernels = "reference"`` (the default) therefore caps oneDNN at AVX512-BF16
(``ONEDNN_MAX_CPU_ISA``) and MKL at AVX-512 (``MKL_ENABLE_INSTRUCTIONS``, which only Intel CPUs read)
and runs the DiT's convolutions as convolutions; ``"native"`` leaves the libraries their choice and
runs those convolutions as GEMMs (the AMX bug is in the convolution kernel only). One thing no setting
reaches: on Intel CPUs MKL's FFT (the STFT of the audio-encoding path) takes other code paths than on
AMD, so a source clip's mel can differ from the reference's by one bfloat16 step in a few dozen values
(docs/fidelity.md).

Both libraries read their variable once, when they first dispatch a kernel in the process, so the caps
must be set before the first convolution, bfloat16 matmul or MKL call: the engine sets them before
loading (and checks that they took effect), ``acestep-app parity`` at start, the test suite in its
conftest. A value the user exported wins (``setdefault``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

REFERENCE_KERNELS = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "MKL_ENABLE_INSTRUCTIONS": "AVX512"}
CPU_BF16_KERNELS = ("reference", "native")
# A correct bfloat16 patch-embedding convolution is off from float64 by its output rounding (< 1%
# of the output's scale); oneDNN 3.12's AMX kernel by about 100%.
CONV_CHECK_TOLERANCE = 0.05


def pin_reference_cpu_kernels() -> dict[str, str]:
    """Cap oneDNN and MKL at the reference's kernel families (unless set); returns the values in effect.

    No effect on a library that has already dispatched a kernel in this process.
    """
    return {name: os.environ.setdefault(name, value) for name, value in REFERENCE_KERNELS.items()}


def patch_embedding_conv_error(frames: int = 32) -> float:
    """Max error of a bfloat16 convolution shaped like the DiT's patch embedding, relative to its scale.

    About 0.005 (output rounding) with correct kernels, about 1 with oneDNN 3.12's AMX convolution.
    """
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(2048, 8, 16, 1, generator=generator).to(torch.bfloat16)
    latents = torch.randn(1, 8, 16, frames, generator=generator).to(torch.bfloat16)
    with torch.inference_mode():
        exact = F.conv2d(latents.double(), weight.double(), stride=(16, 1))
        actual = F.conv2d(latents, weight, stride=(16, 1))
    return ((actual.double() - exact).abs().max() / exact.abs().max()).item()


def use_reference_cpu_kernels() -> bool:
    """Pin the reference's kernels for bfloat16 on this CPU; False (with a warning) if that came too late.

    Too late means oneDNN already chose other kernels in this process (something ran a convolution
    before the engine loaded, or ``ONEDNN_MAX_CPU_ISA`` names another ISA) and they fail the
    convolution check; the caller should then keep the DiT's convolutions as GEMMs.
    """
    pin_reference_cpu_kernels()
    error = patch_embedding_conv_error()
    if error <= CONV_CHECK_TOLERANCE:
        return True
    logger.warning(
        "bfloat16 on this CPU runs oneDNN kernels other than the reference's (its convolution check is off by "
        "%.0f%%): the output will not equal the reference's. Set ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 before "
        "starting the process, or cpu_bf16_kernels = \"native\" to silence this.",
        100 * error,
    )
    return False


def intel_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True on an Intel CPU, where MKL's FFT takes other code paths than on the reference's AMD one."""
    try:
        return "GenuineIntel" in cpuinfo.read_text(errors="replace")
    except OSError:
        return False
