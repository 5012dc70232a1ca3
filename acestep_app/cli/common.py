"""Subcommands of ``acestep-app`` (see :mod:`acestep_app.cli`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

DEMO_NOTICE = (
    "no model weights found: using the tiny random demo checkpoint, whose audio is noise "
    "(`acestep-app weights pull` fetches the real model)"
)


def choose_weights(settings, weights: str | Path | None, tiny: bool, family=None) -> str | None:
    """The checkpoint a command loads for ``family`` (default: the primary one of ``settings``):
    ``--weights``, else the configured or pulled weights, else the family's tiny demo.

    Returns None when the settings decide (configured folder or the pull cache).
    """
    from acestep_app.engine.family import served_families

    family = family or served_families(settings)[0]
    if tiny or (weights is None and not family.weights_available(settings)):
        if not tiny:
            logger.warning(DEMO_NOTICE)
        return str(demo_checkpoint(family))
    return str(weights) if weights is not None else None


def demo_checkpoint(family) -> Path:
    """``family``'s tiny demo checkpoint, written once beside the weights cache (random weights)."""
    from acestep_app.weights.store import default_weights_dir

    target = default_weights_dir().parent / "tiny" / family.name
    if not target.is_dir():  # written beside, then renamed: a folder that exists is complete
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        family.write_tiny(partial)
        try:
            partial.rename(target)
        except OSError:  # another process finished first
            shutil.rmtree(partial, ignore_errors=True)
    return target


def add_output_options(parser, default_output: Path) -> None:
    """Options every audio-writing command shares: output file, checkpoint, infra.toml, JSON, engine switches."""
    parser.add_argument("-o", "--output", type=Path, default=default_output,
                        help=f"file to write; its extension picks the format: .wav (default {default_output}), "
                             ".flac, .mp3, .ogg")
    parser.add_argument(
        "--weights",
        help="checkpoint folder (default: [engine].weights_dir, else the pulled weights, else the tiny demo)",
    )
    parser.add_argument("--tiny", action="store_true", help="use the tiny random demo checkpoint (its audio is noise)")
    parser.add_argument("--infra", help="infra.toml to read (default: $ACESTEP_INFRA or the repo's)")
    parser.add_argument("--json", action="store_true", help="print the response body as JSON")
    parser.add_argument("--lora", action="append", type=lora_option, default=[], metavar="PATH_OR_REPO[:SCALE]",
                        help="apply a LoRA adapter (local file or folder, owner/name[@revision] on the Hub, https URL, "
                             "or a pinned name such as rapmachine) at SCALE (default 1); repeatable; see docs/lora.md")
    add_engine_options(parser)


def add_engine_options(parser) -> None:
    """``[engine]`` switches of infra.toml as command-line overrides (speed and numerics)."""
    import argparse

    group = parser.add_argument_group("engine (override infra.toml [engine])")
    group.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    group.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"])
    group.add_argument("--cpu-bf16-kernels", choices=["reference", "native"],
                       help="bfloat16 on a CPU: the reference's kernels (its exact output) or the CPU's fastest")
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
    """``settings`` with the engine options (and ``--lora`` adapters) given on the command line."""
    names = (
        "device", "dtype", "cpu_bf16_kernels", "compile", "batched_guidance", "cross_attention_cache", "threads",
        "decode_chunk_frames",
    )  # fmt: skip
    update = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if update:
        engine = type(settings.engine).model_validate({**settings.engine.model_dump(), **update})
        settings = settings.model_copy(update={"engine": engine})
    return with_cli_loras(settings, getattr(args, "lora", None) or [])


def lora_option(text: str) -> tuple[str, float]:
    """``PATH_OR_REPO[:SCALE]`` -> (path, scale); a trailing ``:<number>`` is the scale."""
    import argparse
    import math

    path, _, tail = text.rpartition(":")
    try:
        scale = float(tail) if path else None
    except ValueError:
        scale = None
    if scale is None:
        return text, 1.0
    if not math.isfinite(scale):
        raise argparse.ArgumentTypeError(f"--lora scale must be a finite number, got {tail!r}")
    return path, scale


def with_cli_loras(settings, loras: list[tuple[str, float]], model: str = "acestep-v1"):
    """``settings`` with the ``--lora`` adapters added to ``[[lora.adapters]]`` (merged at load, as infra.toml's)."""
    if not loras:
        return settings
    entries = [*settings.lora.adapters, *({"path": path, "scale": scale, "model": model} for path, scale in loras)]
    section = type(settings.lora).model_validate({**settings.lora.model_dump(), "adapters": entries})
    return settings.model_copy(update={"lora": section})


def validated(model, values: dict):
    """``model`` built from ``values``; the first schema error as an :class:`InputError` naming the field."""
    from pydantic import ValidationError

    from acestep_app.errors import InputError

    try:
        return model.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        raise InputError(".".join(str(part) for part in first["loc"]), first["msg"]) from None


def run_with_progress(call: Callable):
    """``call(on_progress)`` with a terminal progress bar over the sampler steps; returns its result."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("diffusion", total=None)

        def on_progress(progress) -> None:
            bar.update(task, completed=progress.step, total=progress.total)

        return call(on_progress)


def write_result(path: Path, output_format, generation, *, as_json: bool, skip_logs=frozenset()) -> None:
    """Write ``generation`` to ``path`` in ``output_format``; print the response body (``--json``) or a summary."""
    from acestep_app.audio.formats import encode_audio

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_audio(generation.waveform, generation.sample_rate, output_format))
    body = {
        "audio": {"path": str(path), "content_type": output_format.content_type,
                  "sample_rate": generation.sample_rate},
        "seed": generation.seed,
        "tags": generation.tags,
        "lyrics": generation.lyrics,
        "billable_seconds": generation.billable_seconds,
    }
    if generation.takes:
        body["takes"] = write_takes(path, output_format, generation)
    if as_json:
        print(json.dumps(body, indent=2))
        return
    for line in generation.logs:
        if line not in skip_logs:
            print(line, file=sys.stderr)
    if generation.takes:
        print(takes_table(body["takes"]))
    print(f"wrote {path} ({generation.duration:.2f}s, {generation.sample_rate} Hz, seed {generation.seed})")


def take_path(output: Path, number: int) -> Path:
    """``song.mp3`` -> ``song.take2.mp3``."""
    return output.with_name(f"{output.stem}.take{number}{output.suffix}")


def write_takes(output: Path, output_format, generation) -> list[dict]:
    """Every ranked take beside ``output``; one row per take (seed, lyric WER, path, returned or not)."""
    from acestep_app.audio.formats import encode_audio

    rows = []
    for number, take in enumerate(generation.takes, start=1):
        path = take_path(output, number)
        path.write_bytes(encode_audio(take.waveform, generation.sample_rate, output_format))
        rows.append({"take": number, "seed": take.seed, "lyric_wer": take.score, "path": str(path),
                     "returned": take.waveform is generation.waveform})
    return rows


def takes_table(rows: list[dict]) -> str:
    lines = [f"{'take':>4}  {'seed':>10}  {'lyric WER':>9}  file"]
    for row in rows:
        score = "-" if row["lyric_wer"] is None else f"{row['lyric_wer']:.3f}"
        mark = "  <- returned" if row["returned"] else ""
        lines.append(f"{row['take']:>4}  {row['seed']:>10}  {score:>9}  {row['path']}{mark}")
    return "\n".join(lines)
