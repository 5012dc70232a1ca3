"""What one song costs on a CPU per model family, at the official sizes with random weights (no downloads).

ACE-Step v1 at fal's defaults (27 Euler steps, APG guidance on the middle half: 14 guided batch-3
forwards and 13 unguided ones, the engine's K/V cache) against ACE-Step 1.5 turbo (8 unguided
forwards) and 1.5 sft (50 APG-guided batch-2 forwards), for 30 s and 60 s songs. Both families are
built on the meta device and materialised with random values (``fullsize.materialise``): speed does
not depend on weight values.

A whole 60 s sft song is ~50 batch-2 forwards of a 2B DiT: too long for a shared 2-core CPU. So each
request is measured by its parts, each run on the real shapes: condition encoding, one DiT forward of
every kind the request runs, the VAE / DCAE + vocoder decode. The request's time is computed from them
(forwards x per-forward time + encoding + decode) and printed as such. Each family runs in its own
process with all its models resident, as a server holds them; a song's peak RSS is the process's
after that song's stages (songs run shortest first). For 1.5 the whole-song Oobleck decode is the
largest stage by far (it grows with the song), so a 60 s song needs ~20 GiB free.

It also measures diffusers' 1.5 DiT with its cross-attention keys/values cached for the request
(the text/lyric/timbre sequence is fixed over all steps, but diffusers projects it at every step):
a caching attention processor, the speed-up per forward, and whether outputs stay identical.

    OMP_NUM_THREADS=2 .venv/bin/python bench/families.py                         # both, 30 and 60 s
    OMP_NUM_THREADS=2 .venv/bin/python bench/families.py --family acestep-1.5 --durations 10
    .venv/bin/python bench/families.py --family acestep-1.5 --size tiny --durations 2   # the bench's own check
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import torch  # noqa: E402

from fullsize import budget_lyrics, materialise, parameter_count  # noqa: E402

RESULT_PREFIX = "FAMILY_RESULT "
CAPTION = "synthwave, retro, upbeat, female vocals, 118 bpm, night drive"
TURBO_STEPS, SFT_STEPS = 8, 50
CHARS_PER_QWEN_TOKEN = 4.0  # English text in Qwen's BPE, for the stand-in tokenizer's token counts

QWEN3_EMBEDDING_CONFIG = {  # Qwen/Qwen3-Embedding-0.6B, the 1.5 text encoder
    "vocab_size": 151669, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 32768,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
}  # fmt: skip
OOBLECK_CONFIG = {  # 48 kHz stereo, 1920 samples per latent frame, 64 latent channels (widths assumed 128)
    "encoder_hidden_size": 128, "downsampling_ratios": [2, 4, 4, 6, 10], "channel_multiples": [1, 2, 4, 8, 16],
    "decoder_channels": 128, "decoder_input_channels": 64, "audio_channels": 2, "sampling_rate": 48000,
}  # fmt: skip


@dataclass(frozen=True)
class Cost:
    """Wall seconds and process CPU seconds (steadier when other jobs share the cores) of some work."""

    wall: float
    cpu: float

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.wall + other.wall, self.cpu + other.cpu)

    def __mul__(self, count: int) -> Cost:
        return Cost(self.wall * count, self.cpu * count)

    __rmul__ = __mul__

    def json(self) -> dict:
        return {"wall": round(self.wall, 3), "cpu": round(self.cpu, 3)}


def timed(function, *args, **kwargs) -> tuple[object, Cost]:
    started, cpu_started = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        result = function(*args, **kwargs)
    return result, Cost(time.perf_counter() - started, time.process_time() - cpu_started)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# -- ACE-Step v1 ---------------------------------------------------------------------------------


def measure_v1(durations: list[float]) -> dict:
    from fullsize import build_pipeline

    from acestep_app.acestep_v1.editing import latent_frames
    from acestep_app.acestep_v1.models.transformer import CrossAttentionCache
    from acestep_app.acestep_v1.sampling import COND, NULL, TEXT_ONLY, GuidanceConfig

    pipeline, build_seconds = timed(build_pipeline, "full", "cpu", torch.float32)
    transformer, guidance = pipeline.transformer, GuidanceConfig()
    guided_steps = len(guidance.window(27))
    rows = {}
    for duration in durations:
        conditioning, encode = timed(pipeline.encode_conditions, CAPTION, budget_lyrics(duration), 1, guidance)
        frames = latent_frames(duration)
        cache = CrossAttentionCache(transformer)

        def forward(branches):
            states = torch.cat([conditioning.states[name] for name in branches])
            batch = len(branches)
            latents = torch.randn(batch, 8, 16, frames)
            key_values = cache.get(branches, states)  # once per request and branch set: timed in "kv" below
            return transformer.decode(latents, torch.ones(batch, frames), states, conditioning.mask.repeat(batch, 1),
                                      torch.full((batch,), 500.0), frames, cross_key_values=key_values)

        guided_branches = (COND, TEXT_ONLY, NULL)
        _, kv = timed(lambda: (cache.get(guided_branches, torch.cat([conditioning.states[b] for b in guided_branches])),
                               cache.get((COND,), conditioning.states[COND])))
        _, guided = timed(forward, guided_branches)
        _, unguided = timed(forward, (COND,))
        _, decode = timed(pipeline.decode_latents, torch.randn(1, 8, 16, frames))
        diffusion = guided_steps * guided + (27 - guided_steps) * unguided
        rows[duration] = {
            "encoder_tokens": conditioning.states[COND].shape[1], "encode": (encode + kv).json(),
            "forwards": {"batch 3": [guided_steps, guided.json()], "batch 1": [27 - guided_steps, unguided.json()]},
            "diffusion": diffusion.json(), "decode": decode.json(), "total": (encode + kv + diffusion + decode).json(),
            "peak rss": peak_rss_gib(),
        }
        print(f"v1 {duration:g} s: {json.dumps(rows[duration])}", file=sys.stderr, flush=True)
    return {"build": build_seconds.wall, "parameters": parameter_count(transformer), "rows": rows}


# -- ACE-Step 1.5 --------------------------------------------------------------------------------


MID_CONFIGS = {  # the official depths at a quarter of the widths (DiT 4 heads of 128): for CPUs
    "transformer": {"hidden_size": 512, "intermediate_size": 1536, "num_attention_heads": 4, "num_key_value_heads": 2},
    "condition_encoder": {"hidden_size": 512, "intermediate_size": 1536, "text_hidden_dim": 256,
                          "num_attention_heads": 4, "num_key_value_heads": 2},
    "text_encoder": {**QWEN3_EMBEDDING_CONFIG, "hidden_size": 256, "intermediate_size": 768, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "head_dim": 64},
    "vae": {**OOBLECK_CONFIG, "encoder_hidden_size": 128, "decoder_channels": 32},
}  # fmt: skip


def build_acestep15(dtype=torch.float32, device: str = "cpu", config: str = "full") -> dict:
    """1.5 modules with random weights: DiT, condition encoder, Qwen3-Embedding-0.6B, Oobleck at the
    official sizes (``full``) or at ``MID_CONFIGS`` (``mid``)."""
    from diffusers import AceStepTransformer1DModel, AutoencoderOobleck
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    sizes = MID_CONFIGS if config == "mid" else {"transformer": {}, "condition_encoder": {},
                                                  "text_encoder": QWEN3_EMBEDDING_CONFIG, "vae": OOBLECK_CONFIG}
    return {
        "transformer": materialise(lambda: AceStepTransformer1DModel(**sizes["transformer"]), device, dtype, seed=0),
        "condition_encoder": materialise(lambda: AceStepConditionEncoder(**sizes["condition_encoder"]), device, dtype,
                                         seed=1),
        "text_encoder": materialise(lambda: Qwen3Model(Qwen3Config(**sizes["text_encoder"])), device, dtype, seed=2),
        "vae": materialise(lambda: AutoencoderOobleck(**sizes["vae"]), device, dtype, seed=3),
    }


def build_acestep15_pipeline(config: str, device: str, dtype, *, turbo: bool):
    """diffusers' ``AceStepPipeline`` over :func:`build_acestep15`'s modules; a small BPE tokenizer stands in
    for Qwen's (token counts differ; the text encoder still runs at its real width and depth)."""
    from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler

    from acestep_app.acestep_15.tiny import build_tokenizer

    modules = build_acestep15(dtype, device, config)
    modules["transformer"].register_to_config(is_turbo=turbo)
    pipeline = AceStepPipeline(tokenizer=build_tokenizer(), scheduler=FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1, shift=1.0), **modules)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def encode_acestep15(modules: dict, duration: float) -> torch.Tensor:
    """The pipeline's encoding stage at the real token counts: caption through Qwen3, lyrics through its
    embeddings, both plus the silence timbre through the condition encoder; returns the packed sequence."""
    caption_tokens = math.ceil(len(f"# Instruction\nFill the audio semantic mask based on the given conditions:\n\n"
                                   f"# Caption\n{CAPTION}\n\n# Metas\n- bpm: N/A\n- timesignature: N/A\n"
                                   f"- keyscale: N/A\n- duration: {int(duration)} seconds\n") / CHARS_PER_QWEN_TOKEN)
    lyric_tokens = math.ceil(len(f"# Languages\nen\n\n# Lyric\n{budget_lyrics(duration)}") / CHARS_PER_QWEN_TOKEN)
    vocab = modules["text_encoder"].config.vocab_size
    text_ids, lyric_ids = torch.randint(vocab, (1, caption_tokens)), torch.randint(vocab, (1, lyric_tokens))
    text = modules["text_encoder"](input_ids=text_ids).last_hidden_state
    lyrics = modules["text_encoder"].get_input_embeddings()(lyric_ids)
    encoder = modules["condition_encoder"]
    timbre = encoder.silence_latent[:, :750, :]
    states, _ = encoder(text, torch.ones_like(text_ids, dtype=torch.bool), lyrics,
                        torch.ones_like(lyric_ids, dtype=torch.bool), timbre, torch.arange(1))
    return states


class CachedCrossAttention:
    """An attention processor that computes each block's cross-attention keys/values once per request.

    Wraps diffusers' processor; on a cross-attention call whose encoder sequence has the shape seen
    before (one request), the stored projected (and normed) keys and values replace ``to_k``/``to_v``.
    """

    def __init__(self, processor, store: dict):
        self.processor, self.store = processor, store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        if not (attn.is_cross_attention and encoder_hidden_states is not None):
            return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        key = (id(attn), tuple(encoder_hidden_states.shape))
        if key not in self.store:
            self.store[key] = (attn.norm_k(attn.to_k(encoder_hidden_states).unflatten(-1, (attn.kv_heads, attn.head_dim))),
                               attn.to_v(encoder_hidden_states).unflatten(-1, (attn.kv_heads, attn.head_dim)))
        keys, values = self.store[key]
        return self.processor(_Stored(attn, keys, values), hidden_states, encoder_hidden_states, attention_mask,
                              image_rotary_emb)


class _Stored:
    """The attention module as the processor sees it, with keys/values served from the store."""

    def __init__(self, attn, keys, values):
        self._attn, self._keys, self._values = attn, keys, values

    def __getattr__(self, name):
        return getattr(self._attn, name)

    def to_k(self, states):
        return self._keys.flatten(-2)

    def to_v(self, states):
        return self._values.flatten(-2)

    def norm_k(self, keys):
        return keys  # stored normed


def tiny_acestep15() -> dict:
    """The tiny 1.5 checkpoint's modules (``acestep_15/tiny.py``): the bench's own test size."""
    from acestep_app.acestep_15.tiny import build_tiny_pipeline

    pipeline = build_tiny_pipeline(torch.Generator().manual_seed(0))
    return {name: getattr(pipeline, name) for name in ("transformer", "condition_encoder", "text_encoder", "vae")}


def measure_acestep15(durations: list[float], repeats: int, size: str = "full") -> dict:
    modules, build_seconds = timed(tiny_acestep15) if size == "tiny" else timed(build_acestep15)
    peaks = {"build": peak_rss_gib()}
    transformer = modules["transformer"]
    acoustic = transformer.config.audio_acoustic_hidden_dim
    processors = dict(transformer.attn_processors)
    rows = {}
    for duration in durations:
        states, encode = timed(encode_acestep15, modules, duration)
        peaks[f"encode {duration:g} s"] = peak_rss_gib()
        frames = math.ceil(duration * 25)

        def forward(batch, length=frames):
            return transformer(hidden_states=torch.randn(batch, length, acoustic, generator=torch.Generator().manual_seed(0)),
                               timestep=torch.full((batch,), 0.5), timestep_r=torch.full((batch,), 0.5),
                               encoder_hidden_states=states.expand(batch, -1, -1),
                               context_latents=torch.zeros(batch, length, 2 * acoustic), return_dict=False)[0]

        for batch in (1, 2):  # warm-up: first-call allocations stay out of the timings
            timed(forward, batch, 16)
        store: dict = {}
        caching = {name: CachedCrossAttention(processor, store) for name, processor in processors.items()}
        runs: dict[str, list] = {"batch 1": [], "batch 2": [], "cached": []}
        for _ in range(repeats):  # interleaved, so load from other jobs hits every kind alike
            runs["batch 1"].append(timed(forward, 1))
            runs["batch 2"].append(timed(forward, 2))
            transformer.set_attn_processor(dict(caching))  # (diffusers empties the dict it is given)
            if not store:
                _, fill = timed(forward, 1)  # a request's first step fills the store
            runs["cached"].append(timed(forward, 1))
            transformer.set_attn_processor(dict(processors))
        (one_output, one), (_, two), (cached_output, cached) = (
            min(runs[kind], key=lambda run: run[1].cpu) for kind in ("batch 1", "batch 2", "cached"))
        peaks[f"forwards {duration:g} s"] = peak_rss_gib()
        _, projection = timed(transformer.condition_embedder, states)
        _, decode = timed(lambda: modules["vae"].decode(torch.randn(1, acoustic, frames)).sample)
        peaks[f"decode {duration:g} s"] = peak_rss_gib()
        rows[duration] = {
            "encoder_tokens": states.shape[1], "frames": frames, "encode": encode.json(),
            "forward batch 1": one.json(), "forward batch 2": two.json(), "decode": decode.json(),
            "peak rss": peaks[f"decode {duration:g} s"], "turbo": {"forwards": TURBO_STEPS, "total": (encode + TURBO_STEPS * one + decode).json()},
            "sft": {"forwards": SFT_STEPS, "total": (encode + SFT_STEPS * two + decode).json()},
            "kv_cache": {"forward cached": cached.json(), "first step": fill.json(),
                         "speedup wall": round(one.wall / cached.wall, 3), "speedup cpu": round(one.cpu / cached.cpu, 3),
                         "identical": bool(torch.equal(cached_output, one_output)),
                         "condition projection": projection.json()},
        }
        print(f"1.5 {duration:g} s: {json.dumps(rows[duration])}; peak RSS GiB so far: {json.dumps(peaks)}",
              file=sys.stderr, flush=True)
    return {"build": build_seconds.wall, "parameters": parameter_count(transformer), "rows": rows, "peaks": peaks}


# -- report --------------------------------------------------------------------------------------


def table(results: dict, durations: list[float], threads: int) -> str:
    lines = ["| model | song | DiT forwards | seconds (wall) | seconds (CPU / threads) | RTF (CPU) | peak RSS GiB |",
             "|---|---|---|---|---|---|---|"]
    for duration in durations:
        key = str(float(duration))
        entries = []
        if "v1" in results:
            row = results["v1"]["rows"][key]
            entries.append(("v1, fal defaults (27 steps, APG)", 27, row["total"], row["peak rss"]))
        if "acestep-1.5" in results:
            row = results["acestep-1.5"]["rows"][key]
            entries.append(("1.5 turbo, 8 steps", TURBO_STEPS, row["turbo"]["total"], row["peak rss"]))
            entries.append(("1.5 sft, 50 steps (APG)", SFT_STEPS, row["sft"]["total"], row["peak rss"]))
        for name, forwards, total, rss in entries:
            cpu = total["cpu"] / threads
            lines.append(f"| {name} | {duration:g} s | {forwards} | {total['wall']:.1f} | {cpu:.1f} | "
                         f"{duration / cpu:.3f} | {rss:.1f} |")
    return "\n".join(lines) + (f"\n\nCPU float32, {threads} threads; each total computed from its measured parts "
                                "(encoding + forwards x one forward of each kind + decode); peak RSS: the process's after the "
                                "song's stages, the family's models resident (songs run shortest first).")


def run_child(family: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--family", family, "--child", "--size", args.size,
               "--threads", str(args.threads), "--repeats", str(args.repeats),
               "--durations", *[str(d) for d in args.durations]]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    sys.stderr.write(finished.stderr[-4000:])
    lines = [line for line in finished.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if finished.returncode or not lines:
        hint = " (killed: out of memory? see the docstring for what each family needs)" if finished.returncode == -9 else ""
        raise SystemExit(f"{family} failed (exit {finished.returncode}){hint}")
    return json.loads(lines[-1].removeprefix(RESULT_PREFIX))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=("all", "v1", "acestep-1.5"), default="all")
    parser.add_argument("--durations", type=float, nargs="+", default=[30.0, 60.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="1.5 forwards per kind, interleaved (least CPU kept)")
    parser.add_argument("--size", choices=("full", "tiny"), default="full",
                        help="official sizes, or the tiny 1.5 checkpoint's (a quick check of the bench itself)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.durations = sorted(args.durations)  # the process's peak RSS after a song's stages is that song's peak
    if args.size == "tiny" and args.family != "acestep-1.5":
        parser.error("--size tiny measures --family acestep-1.5 only")
    torch.set_num_threads(args.threads)
    if args.child:
        if args.family == "v1":
            result = measure_v1(args.durations)
        else:
            result = measure_acestep15(args.durations, args.repeats, args.size)
        result["rss"] = peak_rss_gib()
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    print("reproduce: " + shlex.join(["OMP_NUM_THREADS=2", ".venv/bin/python", "bench/families.py", *argv]))
    families = ["v1", "acestep-1.5"] if args.family == "all" else [args.family]
    results = {family: run_child(family, args) for family in families}
    for family, result in results.items():
        print(f"{family}: DiT {result['parameters'] / 1e9:.2f} B parameters, built in {result['build']:.1f} s, "
              f"peak RSS {result['rss']:.1f} GiB")
        for duration, row in result["rows"].items():
            print(f"  {float(duration):g} s: {json.dumps(row)}")
        if "peaks" in result:
            print("  peak RSS GiB after each stage: " + ", ".join(f"{stage} {gib:.1f}" for stage, gib in result["peaks"].items()))
    print()
    print(table(results, args.durations, args.threads))
    if "acestep-1.5" in results:
        for duration, row in results["acestep-1.5"]["rows"].items():
            kv = row["kv_cache"]
            print(f"1.5 DiT K/V cache, {float(duration):g} s ({row['encoder_tokens']} condition tokens): forward "
                  f"CPU {row['forward batch 1']['cpu']:.2f} s -> {kv['forward cached']['cpu']:.2f} s "
                  f"({kv['speedup cpu']:.3f}x; wall {kv['speedup wall']:.3f}x), outputs identical: {kv['identical']}; "
                  f"the condition projection diffusers also repeats per step: CPU {kv['condition projection']['cpu']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
