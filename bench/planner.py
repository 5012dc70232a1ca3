"""ACE-Step 1.5 planner speed: tokens/s of the 5 Hz LM at full size, dynamic against static KV cache,
side by side in one run, random weights (speed does not depend on weight values).

The LM is Qwen3-0.6B / 1.7B (default) / 4B's shape with the audio-code vocabulary appended
(217,204 embedding rows: see ``LM_VOCAB_ROWS``), or a toy of the same architecture, built on the meta
device and materialised with random values on the target device (``fullsize.materialise``). The
tokenizer is the tiny planner tokenizer with the full 64,000-code block, so the constraints mask a
real-size code vocabulary.

What is timed is the planner's phase 2 as it runs in production: ``Planner.plan`` with every
metadata field given (phase 1 skipped), classifier-free guidance on (the conditional and the
unconditional prompt as one batch of 2), constrained to ``--codes`` codes. Decode tokens/s comes from
two runs per path: one writing a single code (prefill + first steps) and one writing ``--codes``;
their difference is pure decoding. The paths are interleaved run by run after one warm-up each:

* dynamic: transformers' default cache, grown a token a step, no compilation (the planner's default off CUDA);
* static: a static KV cache allocated once (the planner's default on CUDA, where it is compiled;
  ``--compile`` also compiles it here, which takes minutes on a CPU).

The last lines estimate an H100 from memory bandwidth (a decode step reads every weight once, in
bfloat16) and the planner's share of a 60 s 1.5 request (phase 1 plus 300 codes; the DiT side from
``--dit-seconds``, the 1.5 turbo request's DiT + VAE time on that GPU).

    OMP_NUM_THREADS=2 .venv/bin/python bench/planner.py --size 1.7B --codes 24   # CPU: minutes, 7.4 GB RAM
    .venv/bin/python bench/planner.py --size toy --codes 8                       # seconds
    .venv/bin/python bench/planner.py --device cuda --codes 300 --compile         # a GPU
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import torch  # noqa: E402

from fullsize import materialise, parameter_count  # noqa: E402

from acestep_app.acestep_15.planner import Planner, PlanRequest, SamplingConfig  # noqa: E402
from acestep_app.acestep_15.planner.tiny import build_planner_tokenizer  # noqa: E402
from acestep_app.acestep_15.planner.values import CODEBOOK_SIZE  # noqa: E402
from acestep_app.songwriter.local_llm import GenerationSpeed  # noqa: E402

# The LM's embedding rows: 217,204, read off the published size of the 1.7B and 0.6B weight files (bf16,
# tied embedding) once the Qwen3 layers are subtracted; Qwen3's 151,669 tokens up to </think> plus the
# 64,000 codes (215,669) padded up. The real config.json is not readable offline.
LM_VOCAB_ROWS = 217204
_SHARED = {"vocab_size": LM_VOCAB_ROWS, "head_dim": 128, "num_key_value_heads": 8,
           "max_position_embeddings": 40960, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
           "tie_word_embeddings": True, "hidden_act": "silu"}  # fmt: skip
LM_CONFIGS = {  # the Qwen3 base models the official LMs are fine-tuned from
    "0.6B": {**_SHARED, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16},
    "1.7B": {**_SHARED, "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28, "num_attention_heads": 16},
    "4B": {**_SHARED, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36, "num_attention_heads": 32},
    # same architecture and vocabulary, toy widths: runs in seconds (the docs' command is tested on it)
    "toy": {**_SHARED, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 32},
}
H100_SXM_BYTES_PER_S = 3.35e12
BANDWIDTH_EFFICIENCY = 0.6  # share of peak HBM bandwidth a bf16 decode step reaches (typical for batch-2 GEMV)
PHASE1_TOKENS = 120  # a chain of thought: ~30 tokens of fields plus a ~90-token caption
CAPTION = "An upbeat synth-pop song with punchy drums, bright arpeggios and a soaring female vocal."
LYRICS = "[Verse]\nWalking down the street tonight\nEvery light is shining bright\n\n[Chorus]\nSing along, sing along"


def build_lm(size: str, device: str, dtype: torch.dtype, tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**LM_CONFIGS[size], eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = materialise(lambda: Qwen3ForCausalLM(config), device, dtype)
    model.tie_weights()
    return model


def request(codes: int) -> PlanRequest:
    """All metadata given, so only phase 2 runs; ``codes`` codes (duration = codes / 5)."""
    return PlanRequest(caption=CAPTION, lyrics=LYRICS, bpm=120, keyscale="A minor", timesignature="4",
                       duration=codes / 5, language="en")


def timed_plan(planner: Planner, codes: int, seed: int) -> tuple[float, int]:
    started = time.perf_counter()
    plan = planner.plan(request(codes), seed=seed, sampling=SamplingConfig())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, plan.tokens["phase2"]


def measure(planners: dict[str, Planner], codes: int, repeats: int) -> dict[str, dict]:
    """Decode tokens/s per path: (tokens of a long run - tokens of a 1-code run) / (time difference)."""
    for label, planner in planners.items():  # warm-up: allocations, compilation
        seconds, _ = timed_plan(planner, 1, seed=0)
        print(f"warm-up {label}: {seconds:.1f} s", file=sys.stderr, flush=True)
    runs: dict[str, list[tuple[float, int, float, int]]] = {label: [] for label in planners}
    for repeat in range(repeats):
        for label, planner in planners.items():
            short = timed_plan(planner, 1, seed=repeat)
            long = timed_plan(planner, codes, seed=repeat)
            runs[label].append((*short, *long))
            print(f"{label}: 1 code {short[0]:.2f} s, {codes} codes {long[0]:.2f} s", file=sys.stderr, flush=True)
    results = {}
    for label, measured in runs.items():
        decode_s = sum(long_s - short_s for short_s, _, long_s, _ in measured) / len(measured)
        decoded = measured[0][3] - measured[0][1]
        results[label] = {"tokens_per_s": decoded / decode_s, "step_s": decode_s / decoded,
                          "prefill_s": sum(m[0] for m in measured) / len(measured)}
    return results


def h100_estimate(size: str, context: int) -> dict:
    """Bandwidth bound of one guided decode step on an H100 SXM in bfloat16: every weight read once
    plus the KV cache of both rows, at ``BANDWIDTH_EFFICIENCY`` of the peak."""
    config = LM_CONFIGS[size]
    hidden, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads, kv_heads, head_dim = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    per_layer = hidden * head_dim * (2 * heads + 2 * kv_heads) + 3 * hidden * inter
    parameters = layers * per_layer + config["vocab_size"] * hidden
    kv_bytes = 2 * layers * 2 * kv_heads * head_dim * context * 2  # 2 rows, K and V, bf16
    step_s = (2 * parameters + kv_bytes) / (H100_SXM_BYTES_PER_S * BANDWIDTH_EFFICIENCY)
    return {"parameters": parameters, "step_s": step_s, "tokens_per_s": 1 / step_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=tuple(LM_CONFIGS), default="1.7B")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--codes", type=int, default=24, help="codes per measured run (a few dozen on a CPU)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="also compile the static-cache path (slow to start on a CPU)")
    parser.add_argument("--dit-seconds", type=float, default=None,
                        help="DiT + VAE seconds of a 60 s 1.5 turbo request on the target GPU, for the share line")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    tokenizer = build_planner_tokenizer(CODEBOOK_SIZE)
    model = build_lm(args.size, args.device, dtype, tokenizer)
    print(f"LM {args.size} shape: {parameter_count(model) / 1e9:.2f} B parameters, {str(dtype).removeprefix('torch.')} "
          f"on {args.device}, threads {torch.get_num_threads()}", file=sys.stderr, flush=True)
    planners = {
        "dynamic cache": Planner(model, tokenizer, name=args.size, speed=GenerationSpeed(cache="dynamic", compile=False)),
        "static cache": Planner(model, tokenizer, name=args.size, speed=GenerationSpeed(cache="static", compile=args.compile)),
    }
    results = measure(planners, args.codes, args.repeats)
    base = results["dynamic cache"]["tokens_per_s"]
    print(f"| ACE-Step 1.5 planner, {args.size} shape, random weights, {str(dtype).removeprefix('torch.')}, "
          f"{args.device}, {torch.get_num_threads()} threads, guided (batch 2), {args.codes} codes | tokens/s | s/step | vs dynamic |")
    print("|---|---|---|---|")
    for label, result in results.items():
        name = label + (" (compiled)" if label == "static cache" and args.compile else "")
        print(f"| {name} | {result['tokens_per_s']:.2f} | {result['step_s']:.3f} | {result['tokens_per_s'] / base:.2f}x |")
    context = 300 + 300 + PHASE1_TOKENS  # prompt + codes of a 60 s song + chain of thought
    estimate = h100_estimate(args.size, context)
    tokens_60s = PHASE1_TOKENS + 60 * 5 + 2
    planner_s = tokens_60s * estimate["step_s"]
    print(f"H100 estimate ({args.size}, bf16, {BANDWIDTH_EFFICIENCY:.0%} of 3.35 TB/s, weights read once a step): "
          f"{estimate['step_s'] * 1e3:.2f} ms/step, {estimate['tokens_per_s']:.0f} tokens/s; "
          f"a 60 s song's {tokens_60s} tokens (phase 1 ~{PHASE1_TOKENS} + 301 codes): {planner_s:.2f} s")
    if args.dit_seconds is not None:
        share = planner_s / (planner_s + args.dit_seconds)
        print(f"planner share of a 60 s 1.5 request: {share:.0%} ({planner_s:.2f} s of {planner_s + args.dit_seconds:.2f} s)")
    print("command: " + shlex.join(["python", "bench/planner.py", *(argv if argv is not None else sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
