"""Strict ``from_pretrained`` for diffusers models: every checkpoint key must match the module.

diffusers only warns about missing or unexpected keys (and initialises the missing ones at random),
which would turn a truncated or wrong checkpoint into silent noise. Here any such key raises
:class:`~acestep_app.errors.WeightsError` naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from acestep_app.errors import WeightsError

_PROBLEM_LABELS = (
    ("missing_keys", "missing keys"),
    ("unexpected_keys", "unexpected keys"),
    ("mismatched_keys", "mismatched shapes"),
)


def check_loading_info(info: dict[str, Any], where: str) -> None:
    """Raise ``WeightsError`` if diffusers' loading info lists any missing, unexpected or mis-shaped key."""
    problems = [f"{label}: {sorted(str(k) for k in info[name])}" for name, label in _PROBLEM_LABELS if info.get(name)]
    if problems:
        raise WeightsError(f"{where} does not match: " + "; ".join(problems))


def strict_from_pretrained(
    load: Callable[..., tuple[torch.nn.Module, dict[str, Any]]],
    path: str | Path,
    *args: Any,
    name: str,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Call a diffusers ``from_pretrained`` (``load``) and reject any key mismatch.

    ``device`` places the weights directly on that device (diffusers ``device_map``); other keywords
    (``torch_dtype`` ...) pass through. ``name`` says what is being loaded in error messages.
    """
    if device is not None:
        kwargs.setdefault("device_map", str(torch.device(device)))
    kwargs.pop("output_loading_info", None)
    where = f"{name} checkpoint at {path}"
    try:
        model, info = load(path, *args, output_loading_info=True, **kwargs)
    except ValueError as error:  # diffusers refuses a mis-shaped tensor itself, naming the key
        if "shape" in str(error):
            raise WeightsError(f"{where} does not match: {error}") from error
        raise
    check_loading_info(info, where)
    return model
