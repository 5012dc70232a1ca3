"""``acestep-app generate "prompt" -o song.wav``: one song on this machine, every schema parameter as an option.

``--model`` picks the model family (default: the primary one of infra.toml). ACE-Step v1 serves a prompt
(prompt-to-audio) or ``--tags``/``--lyrics`` (text-to-audio); other families serve their base endpoint
(``fal-ai/ace-step-1.5`` for acestep-1.5), whose request fields the options fill in.

The output file's extension picks its format: ``.wav`` (float32, as fal), ``.flac``, ``.mp3`` or ``.ogg``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from acestep_app.cli.common import add_output_options

HELP = "generate a song from a prompt (or --tags/--lyrics) into a WAV, FLAC, MP3 or Ogg file"
V1 = "acestep-v1"

# (option, schema field, type, help); defaults come from the schema so they cannot drift.
GENERATION_OPTIONS = [
    ("--duration", "duration", float, "seconds of audio (v1: 5-240; acestep-1.5: up to 600)"),
    ("--steps", "number_of_steps", int, "diffusion steps (v1: 3-60; acestep-1.5: 1-200, default the variant's)"),
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
# Options of the other families' base endpoints (the fields they have; e.g. acestep-1.5), and the
# request field each shared option fills there.
FAMILY_OPTIONS = [
    ("--shift", "shift", float, "timestep shift of the noise schedule, 1-5 (acestep-1.5)"),
    ("--bpm", "bpm", int, "tempo, 30-300 (acestep-1.5; default: the model decides)"),
    ("--key-scale", "key_scale", str, "key, e.g. 'F# minor' (acestep-1.5)"),
    ("--time-signature", "time_signature", str, "beats per bar: 2, 3, 4 or 6 (acestep-1.5)"),
    ("--language", "vocal_language", str, "language of the lyrics, e.g. en, zh, ja (acestep-1.5)"),
]
SHARED_FIELDS = {"duration": "duration", "seed": "seed", "guidance_scale": "guidance_scale",
                 "number_of_steps": "num_inference_steps"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", help="free-text description (prompt-to-audio endpoint; the "
                        "caption of acestep-1.5)")
    parser.add_argument("--model", metavar="FAMILY", help="model family: acestep-v1, acestep-1.5 (default: the "
                        "primary one of infra.toml)")
    parser.add_argument("--tags", help="genre tags instead of a prompt (fal-ai/ace-step endpoint)")
    parser.add_argument("--lyrics", help="lyrics (v1: with --tags; '[inst]' for instrumental; acestep-1.5: "
                        "'[Instrumental]' for none, default written from the prompt)")
    parser.add_argument("--instrumental", action="store_true", help="no vocals (prompt mode)")
    parser.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=None,
                        help="acestep-1.5: let the 5 Hz LM planner write metadata and semantic codes first")
    for option, field, kind, text in GENERATION_OPTIONS + FAMILY_OPTIONS:
        parser.add_argument(option, dest=field, type=kind, help=text)
    add_output_options(parser, default_output=Path("song.wav"))
    parser.add_argument("--takes", type=_take_count, metavar="N",
                        help="sample N seeds (1-8) and return the take whose sung words best match the lyrics "
                             "(default: [quality].takes); every take is also written as NAME.takeK.EXT")


def build_request(args: argparse.Namespace):
    from acestep_app.acestep_v1.schema import PromptToAudioInput, TextToAudioInput
    from acestep_app.cli.common import validated
    from acestep_app.errors import InputError

    given = [option for option, field, _, _ in FAMILY_OPTIONS if getattr(args, field) is not None]
    if given or args.thinking is not None:
        raise InputError(given[0] if given else "--thinking", f"is not an option of {V1}")
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


def build_family_request(args: argparse.Namespace, endpoint):
    """The request of another family's base endpoint: the prompt and every option its input model has."""
    from acestep_app.cli.common import validated
    from acestep_app.errors import InputError

    fields = endpoint.input_model.model_fields
    values = {"prompt": args.prompt, "lyrics": args.lyrics, "thinking": args.thinking}
    values.update({field: getattr(args, dest) for dest, field in SHARED_FIELDS.items()})
    values.update({field: getattr(args, field) for _, field, _, _ in FAMILY_OPTIONS})
    options = {field: option for option, field, _, _ in GENERATION_OPTIONS + FAMILY_OPTIONS}
    options.update({SHARED_FIELDS[dest]: options[dest] for dest in SHARED_FIELDS})
    if args.tags is not None or args.instrumental:
        raise InputError("--tags" if args.tags is not None else "--instrumental", f"is an option of {V1} only")
    for _, dest, _, _ in GENERATION_OPTIONS:
        if dest not in SHARED_FIELDS and getattr(args, dest) is not None:
            raise InputError(options[dest], f"is an option of {V1} only")
    for field, value in values.items():
        if value is not None and field not in fields:
            raise InputError(options.get(field, field), f"is not an option of {endpoint.family}")
    if not args.prompt:
        raise InputError("prompt", "give a prompt (the music to make)")
    return validated(endpoint.input_model, {field: value for field, value in values.items() if value is not None})


def run(args: argparse.Namespace) -> int:
    from acestep_app.audio.formats import format_for_path
    from acestep_app.engine.family import served_families
    from acestep_app.errors import InputError
    from acestep_app.settings import Settings

    try:
        output_format = format_for_path(args.output)
    except ValueError as error:
        print(f"error: output: {error}", file=sys.stderr)
        return 2
    settings = Settings.load(args.infra)
    family = served_families(settings, [args.model] if args.model else None)[0]
    endpoint = None if family.name == V1 else next(e for e in family.endpoints if e.sub_path == "")
    try:
        request = build_request(args) if endpoint is None else build_family_request(args, endpoint)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if endpoint is not None:
        return _run_family(args, settings, family, endpoint, request, output_format)

    from acestep_app.acestep_v1.engine import Engine
    from acestep_app.cli.common import (
        apply_engine_options,
        choose_weights,
        run_with_progress,
        write_result,
    )

    early_warning = _lyrics_warning(request)
    settings = _apply_takes(apply_engine_options(settings, args), args.takes)
    engine = Engine.load(settings, weights_dir=choose_weights(settings, args.weights, args.tiny, family))
    generation = run_with_progress(lambda on_progress: engine.generate(request, on_progress))
    write_result(args.output, output_format, generation, as_json=args.json, skip_logs={early_warning})
    return 0


def _run_family(args, settings, family, endpoint, request, output_format) -> int:
    from acestep_app.cli.common import apply_engine_options, choose_weights, run_with_progress, write_result
    from acestep_app.errors import InputError
    from acestep_app.serving.endpoints import RunContext

    settings = _apply_takes(apply_engine_options(settings, args), args.takes)
    engine = family.load_engine(settings, weights_dir=choose_weights(settings, args.weights, args.tiny, family))
    try:
        generation = run_with_progress(lambda on_progress: endpoint.run(engine, request, RunContext(settings, on_progress)))
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_result(args.output, output_format, generation, as_json=args.json)
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
