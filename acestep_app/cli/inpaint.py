"""``acestep-app inpaint SONG --start 10 --end 20 -o out.wav``: fal's audio-inpaint on a local file."""

from __future__ import annotations

import argparse

from acestep_app.cli.editing import (
    add_generation_arguments,
    add_source_arguments,
    run_edit,
)

HELP = "regenerate one span of a song, keeping the rest (fal-ai/ace-step/audio-inpaint)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser, tags_help="genre tags of the song (default: none)", tags_required=False)
    parser.add_argument("--start", dest="start_time", type=float, help="start of the span, seconds (default 0)")
    parser.add_argument("--end", dest="end_time", type=float, help="end of the span, seconds (default 30)")
    parser.add_argument("--start-from", dest="start_time_relative_to",
                        help="start (default) | end: count --start from the song's start or its end")
    parser.add_argument("--end-from", dest="end_time_relative_to",
                        help="start (default) | end: count --end from the song's start or its end")
    parser.add_argument("--variance", type=float, help="0..1, how far the span may move from the source (0.5)")
    add_generation_arguments(parser, default_output="inpainted.wav")


def run(args: argparse.Namespace) -> int:
    from acestep_app.acestep_v1.schema import AudioInpaintInput

    fields = ("start_time", "end_time", "start_time_relative_to", "end_time_relative_to", "variance")
    values = {field: getattr(args, field) for field in fields if getattr(args, field) is not None}
    return run_edit(args, AudioInpaintInput, {**values, "tags": args.tags, "lyrics": args.lyrics})
