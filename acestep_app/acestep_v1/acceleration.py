"""Speed switches for the inference core: dtype policy, torch.compile with shape buckets, CUDA graphs,
SDPA kernel choice, and weight-file prefetching.

Nothing here changes the maths of a float32 run: shape buckets pad and mask (see
``ACEStepTransformer2DModel.enable_shape_buckets``), compilation only fuses kernels.

dtype policy (``dtype = "auto"`` gives bfloat16 on CUDA, float32 elsewhere). Weights and
activations run in bf16 except these float32 islands, each kept because the reference keeps it:

* timesteps and the sinusoidal timestep projection (bf16 cannot hold 937.5; it would round to 936),
* RoPE tables and the rotation (built in fp32, rounded to bf16 like the reference's cached tables,
  then applied in fp32),
* the ReLU linear-attention core (KV sums over up to 2583 frames),
* RMSNorm / GroupNorm statistics (accumulated in fp32 by the norm kernels),
* the scheduler update (fp32) and the APG projection (float64), in ``sampling.py``,
* the STFT magnitudes of the encode path and the 44.1 -> 48 kHz resampling after the vocoder
  (``autoencoder.py``); the decoder's log-mel mapping stays in bf16, as the reference's
  (docs/fidelity.md lists every place bf16 rounds and why).

Models load one after the other (straight to the device, memory-mapped safetensors); there is no
parallel loader: diffusers and transformers build models under process-wide patches (accelerate's
``init_empty_weights`` swaps ``nn.Module.register_parameter``; the default dtype is switched), so two
loaders in threads put each other's parameters on the meta device or in the wrong dtype. What can
overlap safely is disk I/O: ``prefetch_files`` reads the weights into the page cache in the background.

Heavy imports (torch) stay inside functions: settings and the CLI import this module cheaply.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
# Enough static graphs for every (bucket, batch size, ERG pattern) a run meets before dynamo gives up.
STATIC_RECOMPILE_LIMIT = 256


@dataclass(frozen=True)
class AccelerationOptions:
    """How the transformer runs. Defaults are the plain eager path.

    Attributes:
        compile: ``torch.compile`` the transformer blocks (regional compilation: one graph serves all
            24 blocks, so compiling takes seconds, not minutes).
        compile_backend: torch.compile backend (``"inductor"``; ``"aot_eager"`` for debugging).
        compile_mode: torch.compile mode (None, ``"max-autotune-no-cudagraphs"``, ...).
        dynamic_shapes: compile with symbolic sizes (``dynamic=True``) instead of shape buckets: no
            recompile for any duration; no padding work. Incompatible with ``cuda_graphs``.
        frame_bucket: latent frames per shape bucket when compiling without dynamic shapes
            (128 frames = 11.9 s of audio). Padding is masked out of the maths.
        token_bucket: encoder tokens (speaker + prompt + lyrics) per shape bucket.
        cuda_graphs: compile the whole ``decode`` with CUDA graphs (``mode="reduce-overhead"``,
            static bucketed shapes). CUDA only; implies ``compile``.
        sdpa_backend: restrict the cross-attention SDPA kernel (``"auto"`` lets PyTorch choose;
            with a key mask that is the memory-efficient or cuDNN kernel, flash takes no mask).
    """

    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str | None = None
    dynamic_shapes: bool = False
    frame_bucket: int = 128
    token_bucket: int = 64
    cuda_graphs: bool = False
    sdpa_backend: str = "auto"

    def __post_init__(self) -> None:
        if self.sdpa_backend not in SDPA_BACKENDS:
            raise ValueError(f"sdpa_backend must be one of {SDPA_BACKENDS}, got {self.sdpa_backend!r}")
        if self.cuda_graphs and self.dynamic_shapes:
            raise ValueError("cuda_graphs needs static (bucketed) shapes; turn dynamic_shapes off")
        if self.frame_bucket < 0 or self.token_bucket < 0:
            raise ValueError("bucket sizes must be >= 0 (0 disables bucketing)")

    @classmethod
    def fast(cls, device: str = "cpu", **overrides: Any) -> AccelerationOptions:
        """The recommended fast path for ``device``: compile everywhere, CUDA graphs on CUDA."""
        cuda = str(device).startswith("cuda")
        return cls(**{"compile": True, "cuda_graphs": cuda, **overrides})


def accelerate_transformer(model, options: AccelerationOptions):
    """Apply ``options`` to an ``ACEStepTransformer2DModel`` in place and return it.

    Compilation is lazy: the first ``decode`` of each new shape bucket compiles. With
    ``cuda_graphs`` the model's ``decode`` is replaced by a compiled, CUDA-graphed function whose
    outputs are copied out (a replay reuses its output buffers).
    """
    if options.cuda_graphs and model.device.type != "cuda":
        raise ValueError(f"cuda_graphs needs the model on a CUDA device, it is on {model.device}")
    if options.compile or options.cuda_graphs:
        _compile(model, options)
    if options.sdpa_backend != "auto":
        decode = model.decode
        model.decode = functools.partial(_with_sdpa_backend, options.sdpa_backend, decode)
    return model


def _compile(model, options: AccelerationOptions) -> None:
    import torch

    if not options.dynamic_shapes and options.frame_bucket and options.token_bucket:
        model.enable_shape_buckets(options.frame_bucket, options.token_bucket)
    if options.cuda_graphs:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, STATIC_RECOMPILE_LIMIT)
        compiled = torch.compile(model.decode, backend=options.compile_backend, mode="reduce-overhead", dynamic=False)
        model.decode = functools.partial(_replay_and_copy, compiled)
        logger.info("transformer decode compiled with CUDA graphs, buckets %s", model.shape_buckets)
        return
    dynamic = True if options.dynamic_shapes else None
    model.compile_repeated_blocks(backend=options.compile_backend, mode=options.compile_mode, dynamic=dynamic)
    logger.info(
        "transformer blocks compiled (backend %s, %s)",
        options.compile_backend,
        "dynamic shapes" if options.dynamic_shapes else f"shape buckets {model.shape_buckets}",
    )


def _with_sdpa_backend(backend: str, decode: Callable, *args, **kwargs):
    with sdpa_backend(backend):
        return decode(*args, **kwargs)


def _replay_and_copy(compiled: Callable, *args, **kwargs):
    import torch

    # Each call is a new step for the CUDA-graph tree; the clone keeps the result valid after the
    # next replay (sequential guidance holds v_cond while computing v_uncond with the same graph).
    torch.compiler.cudagraph_mark_step_begin()
    return compiled(*args, **kwargs).clone()


@contextlib.contextmanager
def sdpa_backend(name: str) -> Iterator[None]:
    """Restrict ``scaled_dot_product_attention`` to one kernel family inside the block (``"auto"``: no-op)."""
    if name == "auto":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernels = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }
    with sdpa_kernel(kernels[name]):
        yield


def prefetch_files(paths: Iterable[Path | str], chunk_bytes: int = 64 << 20) -> Future:
    """Read ``paths`` into the OS page cache in a background thread (returns its future).

    Start it before loading models one by one: the memory-mapped safetensors reads that follow
    hit the cache, so disk (or network volume) reads overlap with model construction.
    """
    files = [Path(path) for path in paths]

    def read_all() -> int:
        total = 0
        for path in files:
            with path.open("rb", buffering=0) as handle:
                while block := handle.read(chunk_bytes):
                    total += len(block)
        return total

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
    future = pool.submit(read_all)
    pool.shutdown(wait=False)
    return future
