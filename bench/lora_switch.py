"""What switching LoRA adapters costs on ACE-Step v1, beside what one request's sampling costs.

A random DiT (``--config full``: the official 3.5 B shapes; ``mid``: the bench's mid-size one) gets two
random adapters on the official RapMachine target list (``to_q/k/v``, ``to_out.0`` of both attentions,
the lyric encoder's ``linear_q/k/v``, ``speaker_embedder``): A at ``--rank`` (RapMachine: 256) and B at
a quarter of it. Timed, best of ``--repeats``: none -> A, A -> B, B -> none, A -> A (a request with the
adapters of the one before: nothing to do), and one guided DiT forward (batch 3) at ``--duration``
seconds; a request runs ``--steps`` of them. Printed: each switch, its ratio to a request's sampling,
and that the weights after B -> none are bit-identical to the base model's.

    python bench/lora_switch.py                                    # CPU, mid-size, 30 s song
    python bench/lora_switch.py --config full --device cuda --dtype bfloat16 --duration 60
    python bench/lora_switch.py --config full --layers 2 --dtype bfloat16 --duration 10   # full width, small host
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fullsize import configs, materialise  # noqa: E402

from acestep_app.acestep_v1.lora import NO_ADAPTERS, AdapterUse, MergedAdapters, plan_merge  # noqa: E402
from acestep_app.lora.adapter import AdapterConfig, LoraAdapter, LoraLayer  # noqa: E402

TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "linear_q", "linear_k", "linear_v", "speaker_embedder")


def random_adapter(transformer, rank: int, seed: int) -> LoraAdapter:
    """Random float32 (down, up) pairs, on the CPU, for every targeted Linear (as a parsed file would be)."""
    generator = torch.Generator().manual_seed(seed)
    layers = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in TARGETS):
            down = torch.randn(rank, module.in_features, generator=generator) / module.in_features**0.5
            up = torch.randn(module.out_features, rank, generator=generator) * 0.01
            layers[name] = LoraLayer(down=down, up=up)
    return LoraAdapter(sha256=f"random-{seed}", layers=layers, config=AdapterConfig(), path=Path(f"random-{seed}"))


def weights_digest(model) -> str:
    """sha256 over every parameter's bytes (a copy of a 3.5 B model would not fit beside it on a small host)."""
    import hashlib

    digest = hashlib.sha256()
    for parameter in model.parameters():
        digest.update(parameter.detach().contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dit_forward_seconds(transformer, duration: float, device: torch.device, dtype: torch.dtype, repeats: int) -> float:
    from acestep_app.acestep_v1.pipeline import latent_frames

    frames = latent_frames(duration)
    tokens = 300  # prompt + lyrics of a song (the encoder sequence the cross-attention reads)
    dim = transformer.config.inner_dim
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn((3, 8, 16, frames), generator=generator, device=device, dtype=dtype)
    states = torch.randn((3, tokens, dim), generator=generator, device=device, dtype=dtype)
    inputs = (latents, torch.ones(3, frames, device=device, dtype=dtype), states,
              torch.ones(3, tokens, device=device, dtype=torch.long), torch.full((3,), 500.0, device=device), frames)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first is a warm-up
            started = time.perf_counter()
            transformer.decode(*inputs)
            sync(device)
            best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["mid", "full"], default="mid")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--steps", type=int, default=27)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, help="DiT blocks (default: the config's 24). A switch and a forward both "
                        "grow with the blocks, so their ratio holds for 24: a few full-width blocks fit a small host")
    args = parser.parse_args(argv)

    from acestep_app.acestep_v1.models.transformer import ACEStepTransformer2DModel

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = {**configs(args.config)["transformer"], **({"num_layers": args.layers} if args.layers else {})}
    transformer = materialise(lambda: ACEStepTransformer2DModel(**config), device, dtype)
    base = weights_digest(transformer)
    adapter_a = random_adapter(transformer, args.rank, seed=1)
    adapter_b = random_adapter(transformer, max(1, args.rank // 4), seed=2)
    plan_a = plan_merge(transformer, [AdapterUse(adapter_a, 1.0)], "reference")
    plan_b = plan_merge(transformer, [AdapterUse(adapter_b, 1.0)], "reference")
    merged = MergedAdapters(transformer)
    switches = {"none -> A": (NO_ADAPTERS, plan_a), "A -> B": (plan_a, plan_b), "B -> none": (plan_b, NO_ADAPTERS),
                "A -> A": (plan_a, plan_a)}
    best = {name: float("inf") for name in switches}
    for _ in range(args.repeats):
        for name, (before, after) in switches.items():
            merged.use(before)
            best[name] = min(best[name], merged.use(after))
    merged.use(NO_ADAPTERS)
    restored = weights_digest(transformer) == base

    forward = dit_forward_seconds(transformer, args.duration, device, dtype, args.repeats)
    sampling = forward * args.steps
    params = sum(p.numel() for p in transformer.parameters())
    print(f"ACE-Step v1 DiT ({args.config}, {config['num_layers']} blocks, {params / 1e9:.2f} B parameters) on {device} "
          f"in {args.dtype}; "
          f"adapter A: {len(adapter_a.layers)} layers at rank {args.rank} "
          f"({adapter_a.nbytes / 2**20:.0f} MiB float32), B: rank {max(1, args.rank // 4)}")
    print(f"  one guided DiT forward (batch 3, {args.duration:g} s of audio): {forward:.3f} s; "
          f"{args.steps} steps: {sampling:.2f} s")
    for name, seconds in best.items():
        print(f"  switch {name:<10} {seconds:8.3f} s   = {seconds / sampling:7.2%} of the request's sampling")
    print(f"  weights after B -> none bit-identical to the base model: {restored}")
    print(f"  reproduce: python bench/lora_switch.py {' '.join(argv if argv is not None else sys.argv[1:])}")


if __name__ == "__main__":
    main()
