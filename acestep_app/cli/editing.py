"""What ``acestep-app edit``, ``inpaint`` and ``outpaint`` share: the source song, the request, the run.

Each command builds its endpoint's request model (so the schema's defaults and bounds apply, as over
HTTP), reads the song with :func:`acestep_app.audio.source.load_audio_file` (the endpoints' limits and
errors) and calls ``Engine.edit(request, source, on_progress)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from acestep_app.cli.common import add_output_options
from acestep_app.cli.generate import GENERATION_OPTIONS

# The generation options of generate, less duration: an edit's length follows the source song.
EDITING_OPTIONS = [option for option in GENERATION_OPTIONS if option[1] != "duration"]


def add_source_arguments(parser: argparse.ArgumentParser, *, tags_help: str, tags_required: bool) -> None:
    parser.add_argument("song", type=Path, help="the source song: a wav, flac, ogg or mp3 file")
    parser.add_argument("--tags", required=tags_required, default="", help=tags_help)
    parser.add_argument("--lyrics", default="", help="lyrics of the result (default: none); '[inst]' for instrumental")


def add_generation_arguments(parser: argparse.ArgumentParser, default_output: str) -> None:
    for option, field, kind, text in EDITING_OPTIONS:
        parser.add_argument(option, dest=field, type=kind, help=text)
    add_output_options(parser, default_output=Path(default_output))


def run_edit(args: argparse.Namespace, model, values: dict) -> int:
    """Validate ``model`` from ``values`` plus the shared options, load the song, edit it, write the result."""
    from acestep_app.audio.formats import format_for_path
    from acestep_app.audio.source import load_audio_file
    from acestep_app.cli.common import apply_engine_options, validated
    from acestep_app.errors import InputError
    from acestep_app.settings import Settings

    try:
        output_format = format_for_path(args.output)
    except ValueError as error:
        print(f"error: output: {error}", file=sys.stderr)
        return 2
    shared = {field: getattr(args, field) for _, field, _, _ in EDITING_OPTIONS if getattr(args, field) is not None}
    settings = apply_engine_options(Settings.load(args.infra), args)
    try:
        request = validated(model, {**shared, **values, "audio_url": args.song.resolve().as_uri()})
        source = load_audio_file(args.song, settings, field="song")
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return edit_and_write(args, settings, request, source, output_format)


def edit_and_write(args, settings, request, source, output_format) -> int:
    from acestep_app.acestep_v1.engine import Engine
    from acestep_app.cli.common import choose_weights, run_with_progress, write_result
    from acestep_app.errors import InputError

    engine = Engine.load(settings, weights_dir=choose_weights(settings, args.weights, args.tiny))
    try:
        generation = run_with_progress(lambda on_progress: engine.edit(request, source, on_progress))
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_result(args.output, output_format, generation, as_json=args.json)
    return 0
