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
