"""Where and in what precision an engine runs: device and dtype names from infra.toml, torch flags.

Shared by every model family; torch is imported inside the functions so settings and the CLI stay light.
"""

from __future__ import annotations

DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(name: str) -> str:
    """``"auto"`` = CUDA when available, else the CPU; any other name is used as given."""
    import torch

    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(name: str, device: str = "cpu"):
    """Map a settings dtype name to a torch dtype; ``"auto"`` = bfloat16 on CUDA (if supported), else float32."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
    if name == "auto":
        cuda = str(device).startswith("cuda") and torch.cuda.is_available()
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def configure_torch(device: str) -> None:
    """Process-wide numerics flags of the reference on CUDA: TF32 matmuls, deterministic cuDNN.

    Call once from the engine at load time (these flags are global to the process).
    """
    import torch

    if not str(device).startswith("cuda"):
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
