"""``acestep-app edit SONG --mode remix|lyrics --tags ... -o out.wav``: fal's audio-to-audio on a local file."""

from __future__ import annotations

import argparse

from acestep_app.cli.editing import (
    add_generation_arguments,
    add_source_arguments,
    run_edit,
)

HELP = "remix a song, or re-sing it with new lyrics (fal-ai/ace-step/audio-to-audio)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser, tags_help="genre tags of the result", tags_required=True)
    parser.add_argument("--mode", dest="edit_mode", help="remix (default) | lyrics: change the lyrics only")
    parser.add_argument("--original-tags", help="genre tags of the source song (default: the same as --tags)")
    parser.add_argument("--original-lyrics", default="", help="lyrics of the source song (default: none)")
    parser.add_argument("--original-seed", type=int, help="seed that made the source song, if known")
    add_generation_arguments(parser, default_output="edited.wav")


def run(args: argparse.Namespace) -> int:
    from acestep_app.acestep_v1.schema import AudioToAudioInput

    values = {
        "tags": args.tags,
        "lyrics": args.lyrics,
        "original_tags": args.tags if args.original_tags is None else args.original_tags,
        "original_lyrics": args.original_lyrics,
        "original_seed": args.original_seed,
    }
    if args.edit_mode is not None:
        values["edit_mode"] = args.edit_mode
    return run_edit(args, AudioToAudioInput, values)
