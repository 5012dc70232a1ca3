"""Full-size DiT forward in bfloat16 on CPU: the reference's kernels vs the CPU's fastest, side by side.

``[engine] cpu_bf16_kernels = "reference"`` (the default) caps oneDNN at AVX512-BF16 and MKL at
AVX-512 and runs the DiT's convolutions as convolutions, which reproduces the reference's bfloat16
output bit for bit; ``"native"`` lets oneDNN use AMX where the CPU has it and runs those convolutions
as GEMMs (acestep_app/engine/cpu_kernels.py). The kernel caps are per process, so each measurement
runs in a child process, and the modes alternate round by round so that load changes on a shared
machine hit them alike. Each child builds the official-size DiT with random weights in memory and
times one guided forward (batch 3: cond, text-only, null with ERG) with the request's cross-attention
keys and values cached, as the engine runs it; best of ``--repeats``.

Modes: ``reference`` and ``native`` as above; ``capped-gemm`` (the reference's kernel caps with the
convolutions as GEMMs) separates the cost of the caps from that of the convolutions. The engine before
issue 25 ran the ``native`` kernels (and got a wrong patch embedding from oneDNN's AMX convolution).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bf16_kernels.py --durations 2 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BF16_KERNELS_RESULT "
MODES = ("reference", "capped-gemm", "native")
KERNEL_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def child_environment(mode: str) -> dict[str, str]:
    """The child's environment: the reference's caps for reference/capped-gemm, none for native."""
    env = {name: value for name, value in os.environ.items() if name not in KERNEL_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if mode != "native":
        from acestep_app.engine.cpu_kernels import REFERENCE_KERNELS

        env.update(REFERENCE_KERNELS)
    return env


def measure(mode: str, duration: float, repeats: int, threads: int) -> dict:
    """In the child: build the full-size DiT in bf16 and time the cached guided forward."""
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from fullsize import TRANSFORMER_CONFIG, materialise

    from acestep_app.acestep_v1.models.transformer import ACEStepTransformer2DModel, CrossAttentionCache
    from acestep_app.acestep_v1.pipeline import latent_frames
    from acestep_app.engine.cpu_kernels import patch_embedding_conv_error

    torch.set_num_threads(threads)
    dtype = torch.bfloat16
    conv_error = patch_embedding_conv_error()  # which kernels oneDNN took (AMX's convolution is off by ~1)
    started = time.perf_counter()
    transformer = materialise(lambda: ACEStepTransformer2DModel(**TRANSFORMER_CONFIG), "cpu", dtype)
    transformer.set_conv_impl("conv" if mode == "reference" else "gemm")
    built = time.perf_counter() - started
    generator = torch.Generator().manual_seed(0)
    frames, tokens = latent_frames(duration), 160  # speaker + a prompt's tags + a short verse of lyrics
    latents = torch.randn((3, 8, 16, frames), generator=generator).to(dtype)
    states = torch.randn((3, tokens, TRANSFORMER_CONFIG["num_attention_heads"] * 128), generator=generator).to(dtype)
    inputs = (latents, torch.ones(3, frames, dtype=dtype), states, torch.ones(3, tokens), torch.full((3,), 500.0), frames)
    erg = torch.tensor([False, False, True])
    best = cpu_best = float("inf")
    with torch.inference_mode():
        key_values = CrossAttentionCache(transformer).get("branches", states)
        transformer.decode(*inputs, erg_diffusion=erg, cross_key_values=key_values)  # warm-up
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            transformer.decode(*inputs, erg_diffusion=erg, cross_key_values=key_values)
            best, cpu_best = min(best, time.perf_counter() - wall), min(cpu_best, time.process_time() - cpu)
    return {"mode": mode, "seconds": best, "cpu_seconds": cpu_best, "frames": frames, "tokens": tokens,
            "build_seconds": built, "conv_check_error": conv_error}  # fmt: skip


def run_child(mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--repeats", str(args.repeats),
               "--threads", str(args.threads), "--durations", *map(str, args.durations)]  # fmt: skip
    done = subprocess.run(command, env=child_environment(mode), capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode or not lines:
        raise RuntimeError(f"{mode} child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durations", type=float, nargs="+", default=[2.0], help="seconds of audio (first one used)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of child processes")
    parser.add_argument("--repeats", type=int, default=2, help="timed forwards per child (best kept)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(RESULT_PREFIX + json.dumps(measure(args.child, args.durations[0], args.repeats, args.threads)), flush=True)
        return 0
    sys.path.insert(0, str(ROOT))
    print("reproduce: " + shlex.join([".venv/bin/python", "bench/bf16_kernels.py", *argv]))
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}  # process CPU time: steadier than wall time on a CPU shared with other jobs
    for round_index in range(args.rounds):
        for mode in args.modes:
            result = run_child(mode, args)
            print(f"  round {round_index + 1} {mode:12s} {result['seconds']:.3f} s (process CPU {result['cpu_seconds']:.3f} s; "
                  f"conv check {result['conv_check_error']:.3f})", flush=True)  # fmt: skip
            wall[mode] = min(wall.get(mode, float("inf")), result["seconds"])
            cpu[mode] = min(cpu.get(mode, float("inf")), result["cpu_seconds"])
    print(f"full-size DiT forward, bf16, CPU, {args.threads} thread(s), batch 3 x {result['frames']} frames x "
          f"{result['tokens']} encoder tokens, K/V cached; best of {args.rounds} x {args.repeats}:")  # fmt: skip
    for mode in args.modes:
        print(f"  {mode:12s} wall {wall[mode]:8.3f} s   process CPU {cpu[mode]:8.3f} s")
    if "reference" in wall and "native" in wall:
        print(f"  reference / native: wall {wall['reference'] / wall['native']:.2f}x, "
              f"process CPU {cpu['reference'] / cpu['native']:.2f}x (the default's cost; < 1: the default is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
