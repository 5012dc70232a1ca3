"""``acestep-app generate "prompt" -o song.wav``: one song on this machine, every schema parameter as an option.

The output file's extension picks its format: ``.wav`` (float32, as fal), ``.flac``, ``.mp3`` or ``.ogg``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import add_engine_options

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
    parser.add_argument("-o", "--output", type=Path, default=Path("song.wav"),
                        help="file to write; its extension picks the format: .wav (default), .flac, .mp3, .ogg")
    parser.add_argument(
        "--weights",
        help="checkpoint folder (default: [engine].weights_dir, else the pulled weights, else the tiny demo)",
    )
    parser.add_argument("--tiny", action="store_true", help="use the tiny random demo checkpoint (its audio is noise)")
    parser.add_argument("--infra", help="infra.toml to read (default: $ACESTEP_INFRA or the repo's)")
    parser.add_argument("--json", action="store_true", help="print the response body as JSON")
    parser.add_argument("--takes", type=_take_count, metavar="N",
                        help="sample N seeds (1-8) and return the take whose sung words best match the lyrics "
                             "(default: [quality].takes); every take is also written as NAME.takeK.EXT")
    add_engine_options(parser)


def build_request(args: argparse.Namespace):
    from pydantic import ValidationError

    from ..errors import InputError
    from ..schema import PromptToAudioInput, TextToAudioInput

    values = {field: getattr(args, field) for _, field, _, _ in GENERATION_OPTIONS if getattr(args, field) is not None}
    if args.tags is not None:
        if args.prompt:
            raise InputError("prompt", "give either a prompt or --tags, not both")
        model, values = TextToAudioInput, {**values, "tags": args.tags, "lyrics": args.lyrics or ""}
    elif args.prompt:
        model, values = PromptToAudioInput, {**values, "prompt": args.prompt, "instrumental": args.instrumental}
    else:
        raise InputError("prompt", "give a prompt, or --tags (and --lyrics)")
    try:
        return model.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        raise InputError(".".join(str(part) for part in first["loc"]), first["msg"]) from None


def run(args: argparse.Namespace) -> int:
    from ..audio import format_for_path
    from ..errors import InputError

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

    from ..audio import encode_audio
    from ..engine import Engine
    from ..settings import Settings
    from . import apply_engine_options, choose_weights

    early_warning = _lyrics_warning(request)
    settings = _apply_takes(apply_engine_options(Settings.load(args.infra), args), args.takes)
    engine = Engine.load(settings, weights_dir=choose_weights(settings, args.weights, args.tiny))
    generation = _generate_with_progress(engine, request)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(encode_audio(generation.waveform, generation.sample_rate, output_format))
    body = {
        "audio": {"path": str(args.output), "content_type": output_format.content_type,
                  "sample_rate": generation.sample_rate},
        "seed": generation.seed,
        "tags": generation.tags,
        "lyrics": generation.lyrics,
        "billable_seconds": generation.billable_seconds,
    }
    if generation.takes:
        body["takes"] = _write_takes(generation, args.output, output_format)
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        for line in generation.logs:
            if line != early_warning:
                print(line, file=sys.stderr)
        if generation.takes:
            print(takes_table(body["takes"]))
        print(f"wrote {args.output} ({generation.duration:.2f}s, {generation.sample_rate} Hz, seed {generation.seed})")
    return 0


def _take_count(text: str) -> int:
    count = int(text)
    if not 1 <= count <= 8:
        raise argparse.ArgumentTypeError(f"--takes must be 1-8, got {count}")
    return count


def _apply_takes(settings, takes: int | None):
    if takes is None:
        return settings
    return settings.model_copy(update={"quality": settings.quality.model_copy(update={"takes": takes})})


def take_path(output: Path, number: int) -> Path:
    """``song.mp3`` -> ``song.take2.mp3``."""
    return output.with_name(f"{output.stem}.take{number}{output.suffix}")


def _write_takes(generation, output: Path, output_format) -> list[dict]:
    from ..audio import encode_audio

    rows = []
    for number, take in enumerate(generation.takes, start=1):
        path = take_path(output, number)
        path.write_bytes(encode_audio(take.waveform, generation.sample_rate, output_format))
        rows.append({"take": number, "seed": take.seed, "lyric_wer": take.score, "path": str(path),
                     "returned": take.seed == generation.seed and take.waveform is generation.waveform})
    return rows


def takes_table(rows: list[dict]) -> str:
    lines = [f"{'take':>4}  {'seed':>10}  {'lyric WER':>9}  file"]
    for row in rows:
        score = "-" if row["lyric_wer"] is None else f"{row['lyric_wer']:.3f}"
        mark = "  <- returned" if row["returned"] else ""
        lines.append(f"{row['take']:>4}  {row['seed']:>10}  {score:>9}  {row['path']}{mark}")
    return "\n".join(lines)


def _lyrics_warning(request) -> str | None:
    """Tags + lyrics requests learn before any model loads that the duration is too short (printed once)."""
    from ..lyric_timing import duration_warning

    lyrics = getattr(request, "lyrics", None)
    warning = duration_warning(lyrics, request.duration) if lyrics else None
    if warning:
        print(warning, file=sys.stderr)
    return warning


def _generate_with_progress(engine, request):
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("diffusion", total=None)

        def on_progress(progress) -> None:
            bar.update(task, completed=progress.step, total=progress.total)

        return engine.generate(request, on_progress)
