"""``acestep-app generate "prompt" -o song.wav``: one song on this machine, every schema parameter as an option.

The output file's extension picks its format: ``.wav`` (float32, as fal), ``.flac``, ``.mp3`` or ``.ogg``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from acestep_app.cli.common import add_output_options

HELP = "generate a song from a prompt (or --tags/--lyrics) into a WAV, FLAC, MP3 or Ogg file"

# (option, schema field, type, help); defaults come from the schema so they cannot drift.
GENERATION_OPTIONS = [
    ("--duration", "duration", float, "seconds of audio, 5-240"),
    ("--steps", "number_of_steps", int, "diffusion steps, 3-60"),
    ("--seed", "seed", int, "random seed (default: random, printed)"),
    ("--scheduler", "scheduler", str, "euler | heun"),
    ("--guidance-type", "guidance_type", str, "cfg | apg | cfg_star"),
    ("--granularity-scale", "granularity_scale", float, "-100..100"),
    ("--guidance-interval", "guidance_interval", float, "0..1"),
    ("--guidance-interval-decay", "guidance_interval_decay", float, "0..1"),
    ("--guidance-scale", "guidance_scale", float, "0..200"),
    ("--minimum-guidance-scale", "minimum_guidance_scale", float, "0..200"),
    ("--tag-guidance-scale", "tag_guidance_scale", float, "0..10"),
    ("--lyric-guidance-scale", "lyric_guidance_scale", float, "0..10"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", help="free-text description (prompt-to-audio endpoint)")
    parser.add_argument("--tags", help="genre tags instead of a prompt (fal-ai/ace-step endpoint)")
    parser.add_argument("--lyrics", help="lyrics with --tags (default: none); '[inst]' for instrumental")
    parser.add_argument("--instrumental", action="store_true", help="no vocals (prompt mode)")
    for option, field, kind, text in GENERATION_OPTIONS:
        parser.add_argument(option, dest=field, type=kind, help=text)
    add_output_options(parser, default_output=Path("song.wav"))
    parser.add_argument("--takes", type=_take_count, metavar="N",
                        help="sample N seeds (1-8) and return the take whose sung words best match the lyrics "
                             "(default: [quality].takes); every take is also written as NAME.takeK.EXT")


def build_request(args: argparse.Namespace):
    from acestep_app.acestep_v1.schema import PromptToAudioInput, TextToAudioInput
    from acestep_app.cli.common import validated
    from acestep_app.errors import InputError

    values = {field: getattr(args, field) for _, field, _, _ in GENERATION_OPTIONS if getattr(args, field) is not None}
    if args.tags is not None:
        if args.prompt:
            raise InputError("prompt", "give either a prompt or --tags, not both")
        model, values = TextToAudioInput, {**values, "tags": args.tags, "lyrics": args.lyrics or ""}
    elif args.prompt:
        model, values = PromptToAudioInput, {**values, "prompt": args.prompt, "instrumental": args.instrumental}
    else:
        raise InputError("prompt", "give a prompt, or --tags (and --lyrics)")
    return validated(model, values)


def run(args: argparse.Namespace) -> int:
    from acestep_app.audio.formats import format_for_path
    from acestep_app.errors import InputError

    try:
        output_format = format_for_path(args.output)
    except ValueError as error:
        print(f"error: output: {error}", file=sys.stderr)
        return 2
    try:
        request = build_request(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from acestep_app.acestep_v1.engine import Engine
    from acestep_app.cli.common import (
        apply_engine_options,
        choose_weights,
        run_with_progress,
        write_result,
    )
    from acestep_app.settings import Settings

    early_warning = _lyrics_warning(request)
    settings = _apply_takes(apply_engine_options(Settings.load(args.infra), args), args.takes)
    engine = Engine.load(settings, weights_dir=choose_weights(settings, args.weights, args.tiny))
    generation = run_with_progress(lambda on_progress: engine.generate(request, on_progress))
    write_result(args.output, output_format, generation, as_json=args.json, skip_logs={early_warning})
    return 0


def _lyrics_warning(request) -> str | None:
    """Tags + lyrics requests learn before any model loads that the duration is too short (printed once)."""
    from acestep_app.quality.lyric_timing import duration_warning

    lyrics = getattr(request, "lyrics", None)
    warning = duration_warning(lyrics, request.duration) if lyrics else None
    if warning:
        print(warning, file=sys.stderr)
    return warning


def _take_count(text: str) -> int:
    count = int(text)
    if not 1 <= count <= 8:
        raise argparse.ArgumentTypeError(f"--takes must be 1-8, got {count}")
    return count


def _apply_takes(settings, takes: int | None):
    if takes is None:
        return settings
    return settings.model_copy(update={"quality": settings.quality.model_copy(update={"takes": takes})})
