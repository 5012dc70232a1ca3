"""Speed of one ACE-Step v1 request at fal's defaults, stage by stage; sequential vs fast path; cold start.

fal defaults (``TextToAudioInput``): 27 Euler steps, APG, guidance interval 0.5, tag 5 / lyric 1.5
(double condition): the reference's sequential loop costs 55 transformer forwards, the batched-guidance
fast path 27. Each stage (prompt writing, text + lyric encoding, diffusion, decode, WAV encoding)
gets its wall time and peak memory (CUDA ``max_memory_allocated`` on a GPU, sampled process RSS on a
CPU); each run its forward count and real-time factor (seconds of audio per second of wall time).

On a GPU it loads the real checkpoint (``--checkpoint`` or the pinned weights of ``infra.toml``);
on a CPU it writes a mid-size random checkpoint (``bench/midsize.py``) so that the ratios mean
something and a 30 s song takes tens of seconds.

    .venv/bin/python bench/bench.py --compare                      # CPU: 30 s, sequential vs fast
    .venv/bin/python bench/bench.py --durations 10 --editing       # + one inpaint and one outpaint
    .venv/bin/python bench/bench.py --durations 30 60 240 --compare --cold-start   # a GPU machine

On a CPU shared with other jobs keep ``--threads 1``: OpenMP threads fighting for busy cores run
many times slower. ``--repeats N`` interleaves the paths N times and keeps each stage's best time.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from acestep_app.audio.formats import wav_bytes  # noqa: E402
from acestep_app.acestep_v1.engine import sampler_arguments  # noqa: E402
from acestep_app.acestep_v1.schema import TextToAudioInput  # noqa: E402

PROMPT = "An upbeat synth-pop song about driving along the coast at night, female vocals."
STAGES = ("prompt", "encode", "diffusion", "decode", "wav")
DEFAULT_MIDSIZE_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "acestep-bench-midsize"
RESULT_PREFIX = "COLD_START_RESULT "
WARMUP_STEPS = 3  # the fewest fal accepts; still meets both the guided and the unguided batch shapes


# -- memory -------------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory since the last ``reset``: CUDA allocations on a GPU, sampled process RSS on a CPU."""

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.cuda = device.type == "cuda"
        self._floor = 0
        self._rss_peak = 0
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        if not self.cuda:
            self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)
            self._thread.start()

    def _rss(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self._page

    def _sample(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._rss_peak = max(self._rss_peak, self._rss())

    def reset(self) -> None:
        self._floor = 0
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._rss_peak = self._rss()

    def current(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else self._rss()

    def peak(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return max(self._floor, torch.cuda.max_memory_allocated())
        return max(self._floor, self._rss_peak, self._rss())

    def raise_floor(self, value: int) -> None:
        """Keep an enclosing stage's peak across a nested stage's ``reset``."""
        self._floor = max(self._floor, value)

    def close(self) -> None:
        self._stop.set()


@dataclass
class StageRecorder:
    memory: PeakMemory
    seconds: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, int] = field(default_factory=dict)
    growth: dict[str, int] = field(default_factory=dict)  # peak above the memory in use at the stage's start

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        outer_peak = self.memory.peak()
        self.memory.reset()
        before = self.memory.current()
        started = time.perf_counter()
        try:
            yield
        finally:
            peak = self.memory.peak()  # synchronises CUDA before the clock stops
            self.seconds[name] = time.perf_counter() - started
            self.peaks[name] = peak
            self.growth[name] = max(0, peak - before)
            self.memory.raise_floor(max(outer_peak, peak))


# -- one request --------------------------------------------------------------------------------


@dataclass
class PathConfig:
    name: str
    batched_guidance: bool
    compile: bool
    decode_chunk_frames: int | None
    decode_overlap_frames: int | None = None


@dataclass
class RunResult:
    path: str
    duration: float
    audio_seconds: float
    num_forwards: int
    seconds: dict[str, float]
    peaks: dict[str, int]
    growth: dict[str, int]
    latents: torch.Tensor | None = None

    @property
    def total(self) -> float:
        return sum(self.seconds[s] for s in STAGES)

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.total


def pipeline_kwargs(request: TextToAudioInput) -> dict:
    return {"duration": request.duration, "seed": request.seed, **sampler_arguments(request)}


def run_request(pipeline, writer, path: PathConfig, duration: float, steps: int, memory: PeakMemory) -> RunResult:
    """One prompt-to-audio request at fal's defaults, timed stage by stage."""
    recorder = StageRecorder(memory)
    with recorder.stage("prompt"):
        song = writer.write(PROMPT, instrumental=False, duration=duration, seed=0)
    request = TextToAudioInput(tags=song.tags, lyrics=song.lyrics, duration=duration, number_of_steps=steps, seed=0)

    encode_conditions = pipeline.encode_conditions

    def timed_encode(*args, **kwargs):
        with recorder.stage("encode"):
            return encode_conditions(*args, **kwargs)

    pipeline.encode_conditions = timed_encode
    try:
        with recorder.stage("diffusion"):
            output = pipeline(
                request.tags, request.lyrics, batched_guidance=path.batched_guidance, decode=False, **pipeline_kwargs(request)
            )
    finally:
        del pipeline.encode_conditions
    recorder.seconds["diffusion"] -= recorder.seconds["encode"]

    pipeline.decode_chunk_frames = path.decode_chunk_frames
    pipeline.decode_overlap_frames = path.decode_overlap_frames
    with recorder.stage("decode"):
        waveform = pipeline.decode_latents(output.latents)[0]
    with recorder.stage("wav"):
        wav_bytes(waveform.numpy(), output.sample_rate)
    return RunResult(
        path=path.name,
        duration=duration,
        audio_seconds=waveform.shape[-1] / output.sample_rate,
        num_forwards=output.num_forwards,
        seconds=recorder.seconds,
        peaks=recorder.peaks,
        growth=recorder.growth,
        latents=output.latents.float().cpu(),
    )


# -- editing requests ---------------------------------------------------------------------------


def synthetic_song(seconds: float, sample_rate: int = 48000) -> torch.Tensor:
    """A stereo source clip: two chords with a tremolo and a little noise (deterministic)."""
    t = torch.arange(int(seconds * sample_rate), dtype=torch.float64) / sample_rate
    envelope = 0.6 + 0.4 * torch.sin(2 * torch.pi * 2.0 * t)
    left = sum(0.2 * torch.sin(2 * torch.pi * hz * t) for hz in (220.0, 277.18, 329.63))
    right = sum(0.2 * torch.sin(2 * torch.pi * hz * t) for hz in (196.0, 246.94, 293.66))
    noise = 0.01 * torch.randn(2, t.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (envelope * torch.stack([left, right]) + noise).float()


def run_edit(pipeline, path: PathConfig, kind: str, duration: float, steps: int) -> str:
    """One inpaint or outpaint request at fal's defaults on a ``duration``-s song; one summary line."""
    from acestep_app.acestep_v1.edit_requests import plan_edit
    from acestep_app.errors import InputError
    from acestep_app.acestep_v1.schema import AudioInpaintInput, AudioOutpaintInput

    model = AudioInpaintInput if kind == "inpaint" else AudioOutpaintInput
    request = model(audio_url="bench.wav", tags="synth-pop, female vocals", lyrics="[verse]\nla la la",
                    number_of_steps=steps, seed=0)
    fields = {"inpaint": ("start_time", "end_time", "variance"), "outpaint": ("extend_before_duration",
                                                                              "extend_after_duration")}[kind]
    described = ", ".join(f"{name} {getattr(request, name):g}" for name in fields)
    source = synthetic_song(duration)
    try:
        plan = plan_edit(request, source, 48000, 0, [])
    except InputError as error:
        return f"  {path.name} {kind} ({described}): refused, {error}"
    started = time.perf_counter()
    output = pipeline(plan.tags, plan.lyrics, task=plan.task, batched_guidance=path.batched_guidance,
                      **{**pipeline_kwargs(request_defaults(request)), "num_inference_steps": steps, "seed": 0})
    wall = time.perf_counter() - started
    audio = output.waveform.shape[-1] / output.sample_rate
    stages = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in output.timings.items())
    return (f"  {path.name} {kind} ({described}) of a {duration:g} s song: {audio:.2f} s of audio, "
            f"{output.num_forwards} transformer forwards, {wall:.2f} s wall, {audio / wall:.2f}x real time ({stages})")


def request_defaults(request) -> TextToAudioInput:
    """The generation fields an editing request shares with text-to-audio, as a TextToAudioInput."""
    shared = {name: getattr(request, name) for name in TextToAudioInput.model_fields if hasattr(request, name)}
    return TextToAudioInput(**shared)


def best_of(runs: list[RunResult]) -> RunResult:
    """Each stage's best time over repeats (other jobs on the machine only ever add time)."""
    first = runs[0]
    seconds = {s: min(r.seconds[s] for r in runs) for s in STAGES}
    peaks = {s: max(r.peaks[s] for r in runs) for s in STAGES}
    growth = {s: max(r.growth[s] for r in runs) for s in STAGES}
    return RunResult(first.path, first.duration, first.audio_seconds, first.num_forwards, seconds, peaks, growth,
                     first.latents)


# -- loading ------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_checkpoint(args: argparse.Namespace, device: torch.device) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    if device.type == "cuda":
        from acestep_app.settings import Settings
        from acestep_app.weights.store import ensure_weights

        return ensure_weights(Settings.load())
    from midsize import write_midsize_checkpoint

    return write_midsize_checkpoint(args.midsize_dir, heads=args.heads)


def load_pipeline(checkpoint: Path | None, device: torch.device, dtype: torch.dtype, path: PathConfig):
    """From ``checkpoint``, or (None) the official configs with random weights built in memory on ``device``."""
    from acestep_app.acestep_v1.acceleration import AccelerationOptions, accelerate_transformer
    from acestep_app.acestep_v1.pipeline import AceStepPipeline

    if checkpoint is None:
        from fullsize import build_pipeline

        pipeline = build_pipeline("full", device, dtype)
    else:
        pipeline = AceStepPipeline.from_pretrained(checkpoint, device=device, dtype=dtype)
    if path.compile:
        accelerate_transformer(pipeline.transformer, AccelerationOptions.fast(str(device)))
    return pipeline


def load_writer(args: argparse.Namespace, checkpoint: Path | None, device: torch.device):
    from acestep_app.songwriter.fallback import FallbackSongWriter
    from acestep_app.songwriter.local_llm import find_llm_weights
    from acestep_app.songwriter.writer import load_song_writer

    llm = Path(args.llm) if args.llm else checkpoint / "llm" if checkpoint else None
    if llm is None or find_llm_weights(llm) is None:
        return FallbackSongWriter("no language model weights for the bench (--llm DIR)")
    return load_song_writer(llm, "transformers", device=str(device))


def path_configs(args: argparse.Namespace, device: torch.device) -> list[PathConfig]:
    from acestep_app.acestep_v1.engine import decode_chunking
    from acestep_app.settings import EngineSection

    cuda = device.type == "cuda"
    compile_fast = {"on": True, "off": False, "auto": cuda}[args.compile]
    chunk = "auto" if args.decode_chunk_frames < 0 else args.decode_chunk_frames
    chunk_frames, overlap_frames = decode_chunking(EngineSection(decode_chunk_frames=chunk), str(device))
    fast = PathConfig("fast", True, compile_fast, chunk_frames, overlap_frames)
    sequential = PathConfig("sequential", batched_guidance=False, compile=False, decode_chunk_frames=None)
    return [sequential, fast] if args.compare else [fast]


# -- printing -----------------------------------------------------------------------------------


def mib(value: int) -> str:
    return f"{value / 2**20:,.0f}"


def print_result(result: RunResult) -> None:
    print(f"  {result.path}: {result.audio_seconds:.2f} s of audio, {result.num_forwards} transformer forwards, "
          f"{result.total:.2f} s wall, {result.realtime_factor:.2f}x real time")
    for stage in STAGES:
        print(f"    {stage:<10} {result.seconds[stage]:9.3f} s   peak {mib(result.peaks[stage]):>8} MiB "
              f"(+{mib(result.growth[stage])} MiB in the stage)")


def print_comparison(sequential: RunResult, fast: RunResult) -> None:
    diff = (fast.latents - sequential.latents).abs().max().item()
    print(f"  fast / sequential: total {sequential.total / fast.total:.2f}x faster "
          f"(diffusion {sequential.seconds['diffusion'] / fast.seconds['diffusion']:.2f}x), "
          f"forwards {fast.num_forwards} vs {sequential.num_forwards}, "
          f"real time {fast.realtime_factor:.2f}x vs {sequential.realtime_factor:.2f}x, "
          f"max |latent difference| {diff:.1e}")


# -- one DiT forward, with and without the cross-attention K/V cache -----------------------------


def dit_forward(pipeline, duration: float, repeats: int, memory: PeakMemory) -> None:
    """Time one guided DiT forward (batch 3: cond, text-only, null; as the fast path runs it) with the
    request's cross-attention keys/values cached and computed in the forward, interleaved ``repeats``
    times (best of each), plus the one-off cost of computing the cache."""
    from fullsize import budget_lyrics

    from acestep_app.acestep_v1.models.transformer import CrossAttentionCache
    from acestep_app.acestep_v1.pipeline import latent_frames
    from acestep_app.acestep_v1.sampling import COND, NULL, TEXT_ONLY, GuidanceConfig

    transformer = pipeline.transformer
    branches = (COND, TEXT_ONLY, NULL)
    conditioning = pipeline.encode_conditions("synthwave, upbeat, female vocals, 120 bpm", budget_lyrics(duration),
                                              1, GuidanceConfig())
    states = torch.cat([conditioning.states[name] for name in branches])
    frames = latent_frames(duration)
    generator = torch.Generator(pipeline.device).manual_seed(0)
    latents = torch.randn((3, 8, 16, frames), generator=generator, device=pipeline.device, dtype=pipeline.dtype)
    inputs = (latents, torch.ones(3, frames, device=pipeline.device, dtype=pipeline.dtype), states,
              conditioning.mask.repeat(3, 1), torch.full((3,), 500.0, device=pipeline.device), frames)
    erg = torch.tensor([False, False, True], device=pipeline.device)

    def forward(cache):
        with torch.inference_mode():
            key_values = cache.get(branches, states) if cache is not None else None
            return transformer.decode(*inputs, erg_diffusion=erg, cross_key_values=key_values)

    cache = CrossAttentionCache(transformer)
    recorder = StageRecorder(memory)
    with recorder.stage("kv"):
        forward(cache)  # warm-up; fills the cache (its cost, measured alone below)
    with recorder.stage("kv"):
        with torch.inference_mode():
            transformer.cross_attention_key_values(states)
    kv_seconds = recorder.seconds["kv"]
    best = {"cached": float("inf"), "uncached": float("inf")}
    cpu = dict(best)  # process CPU seconds: on a CPU shared with other jobs, steadier than wall time
    peaks = {"cached": 0, "uncached": 0}
    outputs = {}
    for _ in range(repeats):
        for name, use in (("uncached", None), ("cached", cache)):
            cpu_started = time.process_time()
            with recorder.stage(name):
                outputs[name] = forward(use)
            cpu[name] = min(cpu[name], time.process_time() - cpu_started)
            best[name] = min(best[name], recorder.seconds[name])
            peaks[name] = max(peaks[name], recorder.peaks[name])
    same = torch.equal(outputs["cached"], outputs["uncached"])
    tokens = states.shape[1]
    cpu_text = "" if memory.cuda else (f"; process CPU time {cpu['uncached']:.3f} s vs {cpu['cached']:.3f} s: "
                                       f"{cpu['uncached'] / cpu['cached']:.3f}x")
    print(f"  DiT forward, batch 3, {frames} frames x {tokens} encoder tokens: "
          f"without K/V cache {best['uncached']:.3f} s (peak {mib(peaks['uncached'])} MiB), "
          f"with {best['cached']:.3f} s (peak {mib(peaks['cached'])} MiB): "
          f"{best['uncached'] / best['cached']:.3f}x{cpu_text}; computing the cache (once per request) "
          f"{kv_seconds:.3f} s; outputs identical: {same}")


# -- cold start ---------------------------------------------------------------------------------


def cold_start(args: argparse.Namespace, checkpoint: Path, device: torch.device, fast: PathConfig) -> None:
    """Process start -> first result through the serving Engine, in a fresh interpreter."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--cold-start-child", "--checkpoint", str(checkpoint),
        "--device", str(device), "--dtype", args.dtype, "--durations", str(args.durations[0]),
        "--steps", str(args.steps), "--threads", str(args.threads), "--compile", "on" if fast.compile else "off",
    ]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    lines = [line for line in finished.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if finished.returncode != 0 or not lines:
        print(f"cold start failed (exit {finished.returncode}):\n{finished.stderr[-2000:]}")
        return
    child = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    stages = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in child["timings"].items())
    print(f"cold start ({args.durations[0]:g} s song, compile {'on' if fast.compile else 'off'}): "
          f"{wall:.2f} s from process start to first WAV; in the child: interpreter + imports {child['imports']:.2f} s, "
          f"load {child['load']:.2f} s, first request {child['generate']:.2f} s ({stages})")


def cold_start_child(args: argparse.Namespace) -> None:
    imports = time.perf_counter()  # torch and the app are imported above; count from interpreter start
    imports -= process_start_time()
    from acestep_app.acestep_v1.engine import Engine
    from acestep_app.settings import Settings

    started = time.perf_counter()
    engine_settings = {
        "weights_dir": args.checkpoint, "device": args.device, "dtype": args.dtype,
        "compile": args.compile == "on", "prompt_backend": "fallback",
    }
    engine = Engine.load(Settings.from_dict({"engine": engine_settings}))
    loaded = time.perf_counter()
    generation = engine.generate(TextToAudioInput(tags="pop", lyrics="[verse]\nla la la", duration=args.durations[0],
                                                  number_of_steps=args.steps, seed=0))
    engine.wav_bytes(generation)
    done = time.perf_counter()
    print(RESULT_PREFIX + json.dumps({"imports": imports, "load": loaded - started, "generate": done - loaded,
                                      "timings": generation.timings}), flush=True)


def process_start_time() -> float:
    """This process's start time on the ``perf_counter`` clock (Linux: from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/self/stat") as stat:
        started_after_boot = int(stat.read().rsplit(")", 1)[1].split()[19]) / ticks
    with open("/proc/uptime") as uptime:
        now_after_boot = float(uptime.read().split()[0])
    return time.perf_counter() - (now_after_boot - started_after_boot)


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--durations", type=float, nargs="+", default=None,
                        help="song lengths in seconds (default: 30 on CPU; 30 60 240 on GPU)")
    parser.add_argument("--steps", type=int, default=TextToAudioInput.model_fields["number_of_steps"].default)
    parser.add_argument("--compare", action="store_true", help="also run the plain sequential path, side by side")
    parser.add_argument("--cold-start", action="store_true", help="measure process start -> first result")
    parser.add_argument("--editing", action="store_true",
                        help="also one audio-inpaint and one audio-outpaint request at fal's defaults per duration")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs per path; best time per stage")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="torch.compile the fast path's transformer (auto: on GPU only)")
    parser.add_argument("--decode-chunk-frames", type=int, default=-1,
                        help="fast path decode window in latent frames (-1: the engine's auto, chunked on GPU "
                             "and whole on CPU; 0 whole)")
    parser.add_argument("--checkpoint", help="official-layout checkpoint (default: pinned weights on GPU, mid-size on CPU)")
    parser.add_argument("--full-size", action="store_true",
                        help="official configs with random weights built in memory on the device (no files)")
    parser.add_argument("--dit-forward", action="store_true",
                        help="only time one guided DiT forward per duration, with and without the K/V cache")
    parser.add_argument("--heads", type=int, default=2, help="mid-size DiT heads of 128 (official 20)")
    parser.add_argument("--midsize-dir", type=Path, default=DEFAULT_MIDSIZE_DIR)
    parser.add_argument("--llm", help="prompt-writing LLM folder or .gguf (default <checkpoint>/llm, else fallback)")
    parser.add_argument("--threads", type=int, default=1 if not torch.cuda.is_available() else 0,
                        help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--cold-start-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def forward_only(args, checkpoint: Path | None, device: torch.device, dtype: torch.dtype, path: PathConfig) -> int:
    memory = PeakMemory(device)
    print(f"peak memory: {'CUDA max_memory_allocated' if memory.cuda else 'process RSS, sampled every 5 ms'}")
    try:
        started, before = time.perf_counter(), memory.current()
        pipeline = load_pipeline(checkpoint, device, dtype, path)
        print(f"built the pipeline in {time.perf_counter() - started:.2f} s (+{mib(memory.current() - before)} MiB "
              f"resident; DiT {sum(p.numel() for p in pipeline.transformer.parameters()) / 1e9:.2f} B parameters)")
        for duration in args.durations:
            print(f"{duration:g} s of audio:")
            dit_forward(pipeline, duration, args.repeats, memory)
        print(f"process peak RSS {mib(_peak_rss())} MiB")
    finally:
        memory.close()
    return 0


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.durations is None:
        args.durations = [30.0, 60.0, 240.0] if device.type == "cuda" else [30.0]
    if args.cold_start_child:
        cold_start_child(args)
        return 0

    from acestep_app.engine.devices import configure_torch, resolve_dtype

    configure_torch(str(device))
    dtype = resolve_dtype(args.dtype, str(device))
    checkpoint = None if args.full_size else resolve_checkpoint(args, device)
    paths = path_configs(args, device)
    print("reproduce: " + shlex.join([".venv/bin/python", "bench/bench.py", *argv]))
    print(f"device {device} ({torch.get_num_threads()} threads), dtype {str(dtype).removeprefix('torch.')}, "
          f"checkpoint {checkpoint or 'official configs, random weights in memory'}, torch {torch.__version__}")
    if args.dit_forward:
        return forward_only(args, checkpoint, device, dtype, paths[-1])
    for path in paths:
        print(f"path {path.name}: batched guidance {path.batched_guidance}, compile {path.compile}, "
              f"decode chunk {path.decode_chunk_frames or 'whole'}")

    memory = PeakMemory(device)
    print(f"peak memory: {'CUDA max_memory_allocated' if memory.cuda else 'process RSS, sampled every 5 ms'}")
    writer = load_writer(args, checkpoint, device)
    pipelines = {}
    for path in paths:  # with --compare both stay loaded: subtract the other's weights from GPU peaks
        started, before = time.perf_counter(), memory.current()
        pipelines[path.name] = load_pipeline(checkpoint, device, dtype, path)
        print(f"loaded {path.name} pipeline in {time.perf_counter() - started:.2f} s "
              f"(+{mib(memory.current() - before)} MiB resident)")
    try:
        for duration in args.durations:
            print(f"\n{duration:g} s song, {args.steps} steps (fal defaults: apg, interval 0.5, tag 5 / lyric 1.5)")
            for path in paths:  # warm-up: first-call allocations and compilation stay out of the timings
                started = time.perf_counter()
                run_request(pipelines[path.name], writer, path, duration, WARMUP_STEPS, memory)
                print(f"  warm-up {path.name}: {time.perf_counter() - started:.2f} s")
            runs: dict[str, list[RunResult]] = {path.name: [] for path in paths}
            for _ in range(args.repeats):
                for path in paths:
                    runs[path.name].append(run_request(pipelines[path.name], writer, path, duration, args.steps, memory))
            results = {name: best_of(values) for name, values in runs.items()}
            for result in results.values():
                print_result(result)
            if args.compare:
                print_comparison(results["sequential"], results["fast"])
            if args.editing:
                for kind in ("inpaint", "outpaint"):
                    for path in paths:
                        print(run_edit(pipelines[path.name], path, kind, duration, args.steps))
    finally:
        memory.close()
    if args.cold_start:
        print()
        cold_start(args, checkpoint, device, paths[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
