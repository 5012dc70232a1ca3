"""One table of every speed figure of a prompt-to-audio deployment, from random weights: no downloads.

Speed does not depend on weight values, so every model is built at its real size with random
weights straight on the device (``bench/fullsize.py``). One run measures:

* cold start: a fresh interpreter -> imports -> models built -> first WAV (fast path),
* real-time factor (seconds of audio per second of wall time) of a text-to-audio request at fal's
  defaults (27 Euler steps, APG, guidance interval 0.5, tag 5 / lyric 1.5), for the sequential
  reference loop, the fast path (batched guidance + bf16 on a GPU) and the fast path with
  torch.compile, per duration, with the peak memory of each request,
* ACE-Step 1.5 on diffusers' ``AceStepPipeline`` (``bench/families.py``): turbo at 8 steps and sft at
  50 APG-guided steps, per duration, with peak memory,
* the ACE-Step 1.5 planner (its 1.7B LM's shape on a GPU, a toy one on a CPU): tokens/s of the audio-code
  phase as served, dynamic against static KV cache (compiled on CUDA), and its share of a 60 s 1.5
  request when a 1.5 row measured one,
* the song writer (Qwen3-4B's shape on a GPU, a toy Qwen3 on a CPU): tokens/s with a dynamic
  KV cache (transformers' eager defaults) and, on CUDA, a static one (compiled by transformers, as
  the writer runs it there); the shipped writer's own tokens/s on that LM (the last row to run);
  and the writer's share of a 60 s prompt-to-audio request on the fast path.

On one GPU (official sizes, 30 / 60 / 240 s) it should finish in under 8 minutes from a clean
venv. Rows that would start after ``--budget-s`` are printed as skipped. On a CPU it runs the same
code at the bench's mid-size configs and shorter songs:

    .venv/bin/python bench/gpu_report.py                                  # GPU
    OMP_NUM_THREADS=1 .venv/bin/python bench/gpu_report.py --config mid   # CPU

Progress goes to stderr; the table goes to stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import torch  # noqa: E402

from bench import (  # noqa: E402
    WARMUP_STEPS,
    PathConfig,
    PeakMemory,
    RunResult,
    process_start_time,
    mib,
    pipeline_kwargs,
    run_request,
)
from fullsize import budget_lyrics, build_pipeline, build_writer_llm, parameter_count  # noqa: E402

from acestep_app.acestep_v1.schema import TextToAudioInput  # noqa: E402

TAGS = "synthwave, retro, upbeat, female vocals, 118 bpm, night drive"
STEPS = TextToAudioInput.model_fields["number_of_steps"].default
SHARE_DURATION = 60.0
WRITER_PROMPT_TOKENS = 420  # the writer's chat prompt (system + example + request), measured with the Qwen3 tokenizer
WRITER_JSON_TOKENS = 40  # {"tags": ..., "lyrics": ...} around the lyrics
RESULT_PREFIX = "COLD_START_RESULT "


@dataclass
class Row:
    measurement: str
    setting: str
    audio: str
    result: str
    memory: str = ""


class BudgetLyricsWriter:
    """Stands in for the song writer in RTF rows: tags plus lyrics as long as the line budget allows."""

    description = "budget-length lyrics"

    def write(self, prompt: str, *, instrumental: bool, duration: float, seed: int):
        return SimpleNamespace(tags=TAGS, lyrics=budget_lyrics(duration))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- measurements -------------------------------------------------------------------------------


def rtf_rows(args, label: str, dtype: torch.dtype, path: PathConfig, compile_options, deadline: float,
             memory: PeakMemory, results: dict) -> list[Row]:
    """Warm-up then one timed request per duration on a freshly built pipeline."""
    rows: list[Row] = []
    setting = f"{label}: {'batched' if path.batched_guidance else 'one forward per branch'}, " \
              f"{str(dtype).removeprefix('torch.')}{', ' + compile_options.describe if compile_options else ''}"
    if time.perf_counter() > deadline:
        return [Row("RTF", setting, f"{d:g} s", "skipped: time budget") for d in args.durations]
    started = time.perf_counter()
    pipeline = build_pipeline(args.config, args.device, dtype)
    results["dit_parameters"] = parameter_count(pipeline.transformer)
    if compile_options is not None:
        compile_options.apply(pipeline.transformer)
    log(f"{label}: built in {time.perf_counter() - started:.1f} s")
    writer = BudgetLyricsWriter()
    for duration in args.durations:
        if time.perf_counter() > deadline:
            rows.append(Row("RTF", setting, f"{duration:g} s", "skipped: time budget"))
            continue
        warm = time.perf_counter()
        run_request(pipeline, writer, path, duration, WARMUP_STEPS, memory)
        warm = time.perf_counter() - warm
        result = run_request(pipeline, writer, path, duration, args.steps, memory)
        results[(path.name, compile_options is not None, duration)] = result
        log(f"{label} {duration:g} s: {result.realtime_factor:.2f}x real time ({result.total:.2f} s), warm-up {warm:.1f} s")
        rows.append(Row("RTF", setting, f"{duration:g} s", _rtf_text(result, warm, compile_options is not None),
                        f"{mib(max(result.peaks.values()))} MiB"))
    del pipeline
    _free()
    return rows


ACESTEP15_VARIANTS = (("turbo", 8, True), ("sft", 50, False))  # (name, steps, guidance distilled)


def acestep15_rows(args, deadline: float, memory: PeakMemory, results: dict) -> list[Row]:
    """ACE-Step 1.5 on diffusers' pipeline (``bench/families.py`` builds it): turbo at 8 steps, sft at 50 APG
    steps, one warm-up (2 steps) and one timed request per duration, budget-length lyrics. The turbo
    request's seconds at 60 s (from the longest duration's real-time factor if 60 s is not measured) go to
    ``results["acestep15_request_seconds_60"]`` for the planner's share."""
    from families import build_acestep15_pipeline

    rows: list[Row] = []
    for name, steps, turbo in ACESTEP15_VARIANTS:
        setting = f"1.5 {name}: diffusers AceStepPipeline, {str(args.fast_dtype).removeprefix('torch.')}, {steps} steps" \
                  f"{'' if turbo else ', APG 7 (batch 2)'}"
        if time.perf_counter() > deadline:
            rows += [Row("RTF", setting, f"{d:g} s", "skipped: time budget") for d in args.durations]
            continue
        pipeline = build_acestep15_pipeline(args.config, args.device, args.fast_dtype, turbo=turbo)
        for duration in args.durations:
            if time.perf_counter() > deadline:
                rows.append(Row("RTF", setting, f"{duration:g} s", "skipped: time budget"))
                continue
            arguments = {"prompt": TAGS, "lyrics": budget_lyrics(duration), "audio_duration": duration,
                         "guidance_scale": 7.0, "output_type": "np"}
            with torch.inference_mode():
                pipeline(num_inference_steps=2, **arguments)  # warm-up
                memory.reset()
                started = time.perf_counter()
                audio = pipeline(num_inference_steps=steps, generator=torch.Generator("cpu").manual_seed(0),
                                 **arguments).audios
                peak = memory.peak()  # synchronises CUDA
            seconds = time.perf_counter() - started
            audio_seconds = audio.shape[-1] / pipeline.sample_rate
            log(f"1.5 {name} {duration:g} s: {audio_seconds / seconds:.2f}x real time ({seconds:.2f} s)")
            if turbo and results.get("acestep15_basis") != SHARE_DURATION:  # a measured 60 s wins
                results["acestep15_basis"] = duration
                results["acestep15_request_seconds_60"] = SHARE_DURATION * seconds / audio_seconds
            rows.append(Row("RTF", setting, f"{duration:g} s", f"{audio_seconds / seconds:.2f}x real time "
                            f"({seconds:.2f} s for {audio_seconds:.1f} s of audio; {steps} forwards)", f"{mib(peak)} MiB"))
        del pipeline
        _free()
    return rows


def _rtf_text(result: RunResult, warm: float, compiled: bool) -> str:
    stages = ", ".join(f"{name} {result.seconds[name]:.2f}" for name in ("encode", "diffusion", "decode"))
    warm_text = f"; warm-up incl. compile {warm:.0f} s" if compiled else ""
    return (f"{result.realtime_factor:.2f}x real time ({result.total:.2f} s for {result.audio_seconds:.1f} s of audio: "
            f"{stages} s; {result.num_forwards} forwards{warm_text})")


def writer_rows(args, deadline: float, memory: PeakMemory, results: dict) -> list[Row]:
    """Tokens/s of the writer's LM decoding a 60 s song's token budget: transformers' eager defaults
    (dynamic KV cache) and, on CUDA, the writer's fast setting (static KV cache, which transformers
    compiles). The writer's share of a 60 s request uses the faster one."""
    from acestep_app.songwriter.song import LyricBudget

    size = "Qwen3-4B shape" if args.writer == "full" else "toy Qwen3"
    new_tokens = LyricBudget(SHARE_DURATION).max_new_tokens + WRITER_JSON_TOKENS
    caches = ["dynamic", "static"] if str(args.device).startswith("cuda") else ["dynamic"]
    setting = f"{size}, random weights, {str(args.writer_dtype).removeprefix('torch.')}, transformers generate " \
              f"(greedy), {WRITER_PROMPT_TOKENS}-token prompt"
    if time.perf_counter() > deadline:
        return [Row("song writer tokens/s", setting, "", "skipped: time budget")]
    model = build_writer_llm(args.writer, args.device, args.writer_dtype)
    log(f"writer: {parameter_count(model) / 1e9:.2f} B parameters")
    prompt = torch.randint(1000, 100000, (1, WRITER_PROMPT_TOKENS), generator=torch.Generator().manual_seed(0))
    prompt = prompt.to(args.device)
    rows, fastest = [], None
    for cache in caches:
        if time.perf_counter() > deadline:
            rows.append(Row("song writer tokens/s", f"{setting}, {cache} KV cache", "", "skipped: time budget"))
            continue
        warm, seconds, generated, peak = _time_generate(model, prompt, new_tokens, cache, memory)
        log(f"writer, {cache} cache: {generated / seconds:.1f} tokens/s (warm-up {warm:.1f} s)")
        fastest = seconds if fastest is None else min(fastest, seconds)
        warm_text = f"; warm-up incl. compile {warm:.0f} s" if cache == "static" else ""
        rows.append(Row("song writer tokens/s", f"{setting}, {cache} KV cache", f"{generated} tokens (60 s song's budget)",
                        f"{generated / seconds:.1f} tokens/s ({seconds:.2f} s incl. prefill{warm_text})", f"{mib(peak)} MiB"))
    del model
    _free()
    if fastest is not None:
        rows.append(_share_row(args, fastest, results))
    return rows


def shipped_writer_row(args, deadline: float, memory: PeakMemory) -> Row:
    """The shipped ``TransformersSongWriter`` (JSON skeleton, its default KV cache) on the same kind of
    random LM with the tiny ChatML tokenizer, over the first two prompts of ``bench/writer_prompts.json``.

    Random weights never pass validation, so every request makes all its attempts and then falls
    back: tokens/s is the writer's real decoding speed, seconds per request an upper bound."""
    import tempfile

    from prompting import load_prompts, measure_writer
    from transformers import AutoTokenizer

    from acestep_app.songwriter.local_llm import TransformersSongWriter
    from acestep_app.songwriter.tiny_llm import write_tiny_llm

    title, setting = "song writer tokens/s", "the shipped writer (JSON skeleton, default cache) on the same LM"
    if time.perf_counter() > deadline:
        return Row(title, setting, "", "skipped: time budget")
    size = "Qwen3-4B shape" if args.writer == "full" else "toy Qwen3"
    model = build_writer_llm(args.writer, args.device, args.writer_dtype)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = AutoTokenizer.from_pretrained(write_tiny_llm(Path(scratch) / "tokenizer"))
    writer = TransformersSongWriter(model, tokenizer, name=f"random {size}")
    prompts = load_prompts(limit=2, max_duration=SHARE_DURATION)
    memory.reset()
    measured = measure_writer(writer, prompts)
    peak = memory.peak()
    del writer, model
    _free()
    log(f"shipped writer: {measured['tokens_per_s']:.1f} tokens/s, {measured['seconds_per_request']:.2f} s per request")
    return Row(title, f"{setting}, tiny ChatML tokenizer; random weights fail validation, so all attempts run, "
               "then the fallback",
               f"{len(prompts)} prompts of bench/writer_prompts.json ({measured['generated_tokens']:.0f} tokens each)",
               f"{measured['tokens_per_s']:.1f} tokens/s ({measured['seconds_per_request']:.2f} s per request, "
               f"an upper bound; {measured['valid']} of {measured['requests']} valid)", f"{mib(peak)} MiB")


def _time_generate(model, prompt, new_tokens: int, cache: str, memory: PeakMemory) -> tuple[float, float, int, int]:
    """(warm-up seconds, seconds, generated tokens, peak memory) of one greedy generate of ``new_tokens``."""
    options = {"do_sample": False, "pad_token_id": 0, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
    if cache == "static":
        options["cache_implementation"] = "static"
    with torch.inference_mode():
        started = time.perf_counter()
        model.generate(prompt, **options)  # warm-up at the same lengths (a static cache compiles for them)
        warm = time.perf_counter() - started
        memory.reset()
        started = time.perf_counter()
        output = model.generate(prompt, **options)
        peak = memory.peak()  # synchronises CUDA
        seconds = time.perf_counter() - started
    return warm, seconds, output.shape[1] - prompt.shape[1], peak


def planner_rows(args, deadline: float, memory: PeakMemory, results: dict) -> list[Row]:
    """The 1.5 planner's decoding speed as it serves a request (phase 2: guided batch of 2, constrained to
    codes), transformers' dynamic KV cache against the static one (compiled on CUDA, the planner's
    default there), and its share of a 60 s 1.5 request when a 1.5 row measured one
    (``results["acestep15_request_seconds_60"]``)."""
    import planner as planner_bench

    from acestep_app.acestep_15.planner import Planner
    from acestep_app.acestep_15.planner.tiny import build_planner_tokenizer
    from acestep_app.acestep_15.planner.values import CODEBOOK_SIZE
    from acestep_app.songwriter.local_llm import GenerationSpeed

    title = "1.5 planner tokens/s"
    cuda = str(args.device).startswith("cuda")
    codes = 300 if cuda else 24  # a 60 s song's codes on a GPU; a few dozen on a CPU
    setting = f"{args.planner} LM shape, random weights, {str(args.writer_dtype).removeprefix('torch.')}, " \
              f"guided (batch 2), constrained"
    if time.perf_counter() > deadline:
        return [Row(title, setting, "", "skipped: time budget")]
    tokenizer = build_planner_tokenizer(CODEBOOK_SIZE)
    model = planner_bench.build_lm(args.planner, args.device, args.writer_dtype, tokenizer)
    static = "static KV cache" + (", compiled" if cuda else "")
    planners = {
        "dynamic KV cache": Planner(model, tokenizer, speed=GenerationSpeed(cache="dynamic", compile=False)),
        static: Planner(model, tokenizer, speed=GenerationSpeed(cache="static")),
    }
    memory.reset()
    measured = planner_bench.measure(planners, codes, repeats=1)
    peak = memory.peak()
    del planners, model
    _free()
    rows = [Row(title, f"{setting}, {label}", f"{codes} codes", f"{result['tokens_per_s']:.1f} tokens/s "
                f"({result['step_s'] * 1e3:.1f} ms a step; prefill + 1 code {result['prefill_s']:.2f} s)", f"{mib(peak)} MiB")
            for label, result in measured.items()]
    best = min(measured.values(), key=lambda result: result["step_s"])
    planner_seconds = best["prefill_s"] + (planner_bench.PHASE1_TOKENS + SHARE_DURATION * 5) * best["step_s"]
    request_seconds = results.get("acestep15_request_seconds_60")
    share_title = "1.5 planner share of a 60 s 1.5 request"
    if request_seconds is None:
        rows.append(Row(share_title, "planner (faster cache) + 1.5 turbo render", "60 s",
                        f"planner {planner_seconds:.2f} s; render not measured (no 1.5 row)"))
    else:
        share = planner_seconds / (planner_seconds + request_seconds)
        rows.append(Row(share_title, "planner (faster cache) + 1.5 turbo render", "60 s",
                        f"{share:.0%} ({planner_seconds:.2f} s of {planner_seconds + request_seconds:.2f} s)"))
    return rows


def _share_row(args, writer_seconds: float, results: dict) -> Row:
    """The writer's share of a 60 s request on the fast path (measured at 60 s, else at the longest
    measured duration's real-time factor)."""
    title = "song writer share of a 60 s prompt-to-audio request"
    measured = sorted(key[2] for key in results if isinstance(key, tuple) and key[:2] == ("fast", False))
    if not measured:
        return Row(title, "writer + fast path", "60 s", "not measured (no fast-path row)")
    basis = SHARE_DURATION if SHARE_DURATION in measured else measured[-1]
    request = results[("fast", False, basis)]
    audio_seconds = request.audio_seconds * SHARE_DURATION / basis
    request_seconds = audio_seconds / request.realtime_factor
    how = "measured" if basis == SHARE_DURATION else f"60 s request time from the {basis:g} s real-time factor"
    share = writer_seconds / (writer_seconds + request_seconds)
    return Row(title, f"writer + fast path ({how})", "60 s",
               f"{share:.0%} ({writer_seconds:.2f} s of {writer_seconds + request_seconds:.2f} s)")


def cold_start_row(args, deadline: float) -> Row:
    setting = f"fast path ({str(args.fast_dtype).removeprefix('torch.')}), models built in memory from random " \
              "weights (real weights add their disk read)"
    duration = args.durations[0]
    if time.perf_counter() > deadline:
        return Row("cold start to first result", setting, f"{duration:g} s", "skipped: time budget")
    command = [sys.executable, str(Path(__file__).resolve()), "--cold-start-child", "--config", args.config,
               "--device", args.device, "--durations", str(duration), "--steps", str(args.steps)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in finished.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if finished.returncode != 0 or not lines:
        log(finished.stderr[-3000:])
        return Row("cold start to first result", setting, f"{duration:g} s", f"failed (exit {finished.returncode})")
    child = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    return Row("cold start to first result", setting, f"{duration:g} s",
               f"{child['total']:.1f} s from process start (interpreter + imports {child['imports']:.1f} s, build {child['build']:.1f} s, "
               f"first request {child['request']:.1f} s)")


def cold_start_child(args) -> None:
    imports = time.perf_counter() - process_start_time()
    started = time.perf_counter()
    pipeline = build_pipeline(args.config, args.device, args.fast_dtype)
    built = time.perf_counter()
    path = PathConfig("fast", batched_guidance=True, compile=False, decode_chunk_frames=None)
    memory = PeakMemory(torch.device(args.device))
    try:
        run_request(pipeline, BudgetLyricsWriter(), path, args.durations[0], args.steps, memory)
    finally:
        memory.close()
    done = time.perf_counter()
    result = {"imports": imports, "build": built - started, "request": done - built, "total": done - process_start_time()}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# -- compile ------------------------------------------------------------------------------------


@dataclass
class CompileChoice:
    cuda_graphs: bool

    @property
    def describe(self) -> str:
        if self.cuda_graphs:
            return "torch.compile + CUDA graphs (the engine's compile = true)"
        return "torch.compile of the DiT blocks (regional, 128-frame buckets)"

    def apply(self, transformer) -> None:
        from acestep_app.acestep_v1.acceleration import AccelerationOptions, accelerate_transformer

        accelerate_transformer(transformer, AccelerationOptions(compile=True, cuda_graphs=self.cuda_graphs))


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=("full", "mid"), default="full",
                        help="model sizes: official (full) or the bench's mid-size ones (mid, for CPUs)")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--durations", type=float, nargs="+", default=None,
                        help="song lengths in seconds (default: 30 60 240 at full size, 5 10 20 at mid size)")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--writer", choices=("full", "tiny"), default=None,
                        help="song writer LLM: Qwen3-4B's shape (default on GPU) or a toy Qwen3 (default on CPU)")
    parser.add_argument("--planner", choices=("0.6B", "1.7B", "4B", "toy"), default=None,
                        help="1.5 planner LM: an official size (default 1.7B on GPU) or a toy one (default on CPU)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="compile row: the engine's compile (CUDA graphs; long first compiles per shape)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no row after this many seconds (default 360 on GPU, 1200 on CPU)")
    parser.add_argument("--cold-start-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    on_gpu = str(args.device).startswith("cuda")
    args.durations = args.durations or ([30.0, 60.0, 240.0] if args.config == "full" else [5.0, 10.0, 20.0])
    args.writer = args.writer or ("full" if on_gpu else "tiny")
    args.planner = args.planner or ("1.7B" if on_gpu else "toy")
    args.budget_s = args.budget_s if args.budget_s is not None else (360.0 if on_gpu else 1200.0)
    args.fast_dtype = torch.bfloat16 if on_gpu else torch.float32
    args.writer_dtype = torch.bfloat16 if on_gpu else torch.float32
    return args


def print_table(rows: list[Row]) -> None:
    header = Row("measurement", "setting", "audio", "result", "peak memory")
    lines = [header, Row("---", "---", "---", "---", "---"), *rows]
    for row in lines:
        print(f"| {row.measurement} | {row.setting} | {row.audio} | {row.result} | {row.memory} |")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.cold_start_child:
        cold_start_child(args)
        return 0
    from acestep_app.engine.devices import configure_torch

    started = time.perf_counter()
    deadline = started + args.budget_s
    configure_torch(args.device)
    device = torch.device(args.device)
    memory = PeakMemory(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} torch threads"
    log(f"{name}; config {args.config}; durations {args.durations}; budget {args.budget_s:.0f} s")
    sequential = PathConfig("sequential", batched_guidance=False, compile=False, decode_chunk_frames=None)
    fast = PathConfig("fast", batched_guidance=True, compile=False, decode_chunk_frames=None)
    results: dict = {}
    rows = [cold_start_row(args, deadline)]
    log(f"cold start: {rows[0].result}")
    try:
        fast_rows = rtf_rows(args, "fast", args.fast_dtype, fast, None, deadline, memory, results)
        writer = writer_rows(args, deadline, memory, results)
        sequential_rows = rtf_rows(args, "sequential", torch.float32, sequential, None, deadline, memory, results)
        compiled_rows = rtf_rows(args, "fast + compile", args.fast_dtype, fast, CompileChoice(args.cuda_graphs),
                                 deadline, memory, results)
        writer.insert(-1, shipped_writer_row(args, deadline, memory))
        acestep15 = acestep15_rows(args, deadline, memory, results)
        planner = planner_rows(args, deadline, memory, results)
    finally:
        memory.close()
    rows += sequential_rows + fast_rows + compiled_rows + acestep15 + writer + planner
    total = time.perf_counter() - started
    rows.append(Row("setup", f"{name}, torch {torch.__version__}, {args.config} config "
                    f"(DiT {results.get('dit_parameters', 0) / 1e9:.2f} B parameters), fal defaults "
                    f"({args.steps} steps, APG, tag 5 / lyric 1.5), whole decode", "", f"report took {total:.0f} s"))
    rows.append(Row("reproduce", "", "", "`" + shlex.join([".venv/bin/python", "bench/gpu_report.py", *argv]) + "`"))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
