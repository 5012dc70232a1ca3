"""Subcommands of ``acestep-app`` (see :mod:`acestep_app.cli`)."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DEMO_NOTICE = (
    "no model weights found: using the tiny random demo checkpoint, whose audio is noise "
    "(`acestep-app weights pull` fetches the real model)"
)


def choose_weights(settings, weights: str | Path | None, tiny: bool) -> str | None:
    """The checkpoint a command loads: ``--weights``, else the configured or pulled weights, else the demo.

    Returns None when the settings decide (``[engine].weights_dir`` or the pull cache).
    """
    if tiny or (weights is None and not _real_weights_available(settings)):
        if not tiny:
            logger.warning(DEMO_NOTICE)
        return str(demo_checkpoint())
    return str(weights) if weights is not None else None


def _real_weights_available(settings) -> bool:
    """A configured checkpoint folder, or pulled weights in the cache (possibly still incomplete)."""
    from ..weights import weights_cache_dir

    return bool(settings.engine.weights_dir) or (weights_cache_dir(settings) / "ace_step_transformer").is_dir()


def demo_checkpoint() -> Path:
    """The tiny demo checkpoint, written once beside the weights cache (random weights)."""
    from ..tiny import TINY_MARKER, write_tiny_checkpoint
    from ..weights import default_weights_dir

    target = default_weights_dir().parent / "tiny"
    if not (target / TINY_MARKER).exists():
        write_tiny_checkpoint(target)
    return target


def add_engine_options(parser) -> None:
    """``[engine]`` switches of infra.toml as command-line overrides (speed and numerics)."""
    import argparse

    group = parser.add_argument_group("engine (override infra.toml [engine])")
    group.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    group.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"])
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the transformer (shape-bucketed)")
    group.add_argument("--batched-guidance", action=argparse.BooleanOptionalAction, default=None,
                       help="run a guided step's branches as one batched forward")
    group.add_argument("--cross-attention-cache", action=argparse.BooleanOptionalAction, default=None,
                       help="compute the DiT cross-attention keys/values once per request")
    group.add_argument("--threads", type=int, metavar="N",
                       help="CPU: torch threads (0 = automatic; OMP_NUM_THREADS in the environment wins)")
    group.add_argument("--decode-chunk-frames", type=_chunk_frames, metavar="0|auto|N",
                       help="0 = one-pass decode, auto, or N latent frames per chunk")


def _chunk_frames(value: str) -> str | int:
    return value if value == "auto" else int(value)


def apply_engine_options(settings, args):
    """``settings`` with the engine options given on the command line."""
    names = ("device", "dtype", "compile", "batched_guidance", "cross_attention_cache", "threads", "decode_chunk_frames")
    update = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if not update:
        return settings
    engine = type(settings.engine).model_validate({**settings.engine.model_dump(), **update})
    return settings.model_copy(update={"engine": engine})
