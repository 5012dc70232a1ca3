"""Cost of ranked takes: one request with N = 1, 2 and 4 takes, side by side, one take per run or batched.

Each row is one ``Engine.generate`` of an unseeded tags + lyrics request (so every take is sampled):
wall time, time per take, the ratio to N = 1, the real-time factor of the returned audio (seconds of
audio per second of wall time) and what each ``[quality].bill_takes`` policy bills. Ranking time is the
Whisper transcription plus scoring; without ``--asr`` no transcriber is loaded and ranking falls back to
the first take (near-zero time), so the rows then show the generation cost alone.

On a CPU it uses the mid-size random checkpoint (``bench/midsize.py``); pass ``--checkpoint`` for the
real weights on a GPU, and ``--asr`` for the pinned Whisper (``<weights>/asr``).

    .venv/bin/python bench/takes.py --duration 10 --steps 27                  # CPU, mid-size checkpoint
    .venv/bin/python bench/takes.py --checkpoint ~/.cache/acestep-app/weights \\
        --asr ~/.cache/acestep-app/weights/asr --duration 60                    # a GPU machine
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from acestep_app.acestep_v1.schema import TextToAudioInput  # noqa: E402

DEFAULT_MIDSIZE_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "acestep-bench-midsize"
LYRICS = ("[verse]\nMorning light across the floor\nCoffee steaming by the door\n"
          "[chorus]\nEvery window holds the sun\nEvery shadow starts to run")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--takes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--modes", nargs="+", choices=("sequential", "batched"), default=["sequential", "batched"])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=TextToAudioInput.model_fields["number_of_steps"].default)
    parser.add_argument("--checkpoint", help="official-layout checkpoint (default: the mid-size random one)")
    parser.add_argument("--heads", type=int, default=2, help="mid-size DiT heads of 128 (official 20)")
    parser.add_argument("--midsize-dir", type=Path, default=DEFAULT_MIDSIZE_DIR)
    parser.add_argument("--asr", help="Whisper checkpoint folder that ranks the takes (default: none, unranked)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=1 if not torch.cuda.is_available() else 0)
    return parser.parse_args(argv)


def load_engine(args: argparse.Namespace):
    from acestep_app.acestep_v1.engine import Engine
    from acestep_app.settings import Settings

    checkpoint = args.checkpoint
    if checkpoint is None:
        from midsize import write_midsize_checkpoint

        checkpoint = write_midsize_checkpoint(args.midsize_dir, heads=args.heads)
    settings = Settings.from_dict({
        "engine": {"device": args.device, "dtype": args.dtype, "prompt_backend": "fallback"},
        "quality": {"takes": max(args.takes), **({"asr_dir": args.asr} if args.asr else {})},
    })
    engine = Engine.load(settings, weights_dir=checkpoint)
    return engine, checkpoint


def run(engine, takes: int, batched: bool, request: TextToAudioInput) -> dict:
    quality = engine.settings.quality.model_copy(update={"takes": takes, "batch_takes": batched})
    engine.settings = engine.settings.model_copy(update={"quality": quality})
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    generation = engine.generate(request)
    wall = time.perf_counter() - started
    generated = sum(take.waveform.shape[-1] for take in generation.takes) / generation.sample_rate or generation.duration
    return {
        "wall": wall,
        "ranking": generation.timings.get("ranking", 0.0),
        "returned": generation.duration,
        "generated": generated,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("acestep_app").setLevel(logging.ERROR)  # per-request notices would split the table
    engine, checkpoint = load_engine(args)
    print("reproduce: " + shlex.join([".venv/bin/python", "bench/takes.py", *argv]))
    print(f"engine {engine.describe()}, checkpoint {checkpoint}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    request = TextToAudioInput(tags="synth-pop, female vocals, 110 bpm", lyrics=LYRICS, duration=args.duration,
                               number_of_steps=args.steps)
    run(engine, 1, False, request.model_copy(update={"number_of_steps": 3}))  # warm-up
    price = engine.settings.app.price_per_second_usd
    print(f"\n{args.duration:g} s song, {args.steps} steps; price {price} USD/s of billed audio")
    print(f"{'takes':>5}  {'mode':<10}  {'wall s':>7}  {'s/take':>7}  {'x N=1':>6}  {'RTF':>6}  {'ranking s':>9}  "
          f"{'bill returned':>13}  {'bill generated':>14}  {'peak GiB':>8}")
    baseline = None
    for mode in args.modes:
        for takes in args.takes:
            if takes == 1 and mode == "batched" and "sequential" in args.modes:
                continue  # one take is the same run either way
            row = run(engine, takes, mode == "batched", request)
            baseline = baseline or row["wall"]
            peak = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.2f}"
            print(f"{takes:>5}  {mode:<10}  {row['wall']:>7.2f}  {row['wall'] / takes:>7.2f}  "
                  f"{row['wall'] / baseline:>6.2f}  {row['returned'] / row['wall']:>6.2f}  {row['ranking']:>9.2f}  "
                  f"{_billing(row, price)}  {peak:>8}")
    return 0


def _billing(row: dict, price: float) -> str:
    returned = f"{row['returned']:.2f}s ${row['returned'] * price:.4f}"
    generated = f"{row['generated']:.2f}s ${row['generated'] * price:.4f}"
    return f"{returned:>13}  {generated:>14}"


if __name__ == "__main__":
    raise SystemExit(main())
