"""``acestep-app outpaint SONG --after 30 [--before 0] -o out.wav``: fal's audio-outpaint on a local file."""

from __future__ import annotations

import argparse

from acestep_app.cli.editing import (
    add_generation_arguments,
    add_source_arguments,
    run_edit,
)

HELP = "extend a song before its start and/or after its end (fal-ai/ace-step/audio-outpaint)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser, tags_help="genre tags of the song (default: none)", tags_required=False)
    parser.add_argument("--before", dest="extend_before_duration", type=float,
                        help="seconds to add before the start (default 0)")
    parser.add_argument("--after", dest="extend_after_duration", type=float,
                        help="seconds to add after the end (default 30)")
    add_generation_arguments(parser, default_output="outpainted.wav")


def run(args: argparse.Namespace) -> int:
    from acestep_app.acestep_v1.schema import AudioOutpaintInput

    fields = ("extend_before_duration", "extend_after_duration")
    values = {field: getattr(args, field) for field in fields if getattr(args, field) is not None}
    return run_edit(args, AudioOutpaintInput, {**values, "tags": args.tags, "lyrics": args.lyrics})
