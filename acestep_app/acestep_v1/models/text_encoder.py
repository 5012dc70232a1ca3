"""UMT5 text encoder for the tags prompt, with the ERG "null" variant (spec §2).

``encode(texts)`` is the conditional embedding; ``encode(texts, erg=True)`` the weakened one used
as unconditional text: the self-attention query projections of encoder blocks 8 and 9 are scaled
by 0.01, which flattens those layers' attention. The scaling is done by forward hooks installed once
at load time that consult a per-call context variable, so the model is never mutated and
concurrent ``encode`` calls (threads or asyncio tasks) do not interfere.

Attention runs the reference's eager UMT5 attention (:func:`reference_umt5_attention`), registered
with transformers' attention interface: in bfloat16 its float32 softmax is what the reference's
text states are made of (transformers 5's eager and SDPA paths round differently).
"""

from __future__ import annotations

import contextvars
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, UMT5EncoderModel

from acestep_app.errors import WeightsError
from acestep_app.acestep_v1.models.loading import check_loading_info

MAX_TEXT_TOKENS = 256
ERG_BLOCKS = (8, 9)
ERG_QUERY_SCALE = 0.01

REFERENCE_ATTENTION = "acestep_umt5_reference"

_erg_active: contextvars.ContextVar[bool] = contextvars.ContextVar("umt5_erg_active", default=False)


def _scale_query_when_erg(module: torch.nn.Module, inputs, output: torch.Tensor) -> torch.Tensor | None:
    if _erg_active.get():
        return output * ERG_QUERY_SCALE
    return None


def reference_umt5_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                             position_bias=None, **kwargs):
    """UMT5 self-attention as transformers 4.50 computes it (the reference's version; docs/fidelity.md).

    Unscaled scores ``q @ k^T`` in the model dtype; the position bias plus the additive mask added to
    them; softmax in float32, cast back before ``@ v``. In bfloat16 each of these roundings shows in
    the text states (a bfloat16 softmax moves them by up to 5e-2). ``scaling`` is UMT5's 1.0.
    """
    scores = torch.matmul(query, key.transpose(2, 3))
    if scaling is not None and scaling != 1.0:
        scores = scores * scaling
    bias = position_bias
    if attention_mask is not None:
        bias = attention_mask if bias is None else bias + attention_mask
    if bias is not None:
        scores = scores + bias
    weights = torch.softmax(scores.float(), dim=-1).type_as(scores)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def _register_reference_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(REFERENCE_ATTENTION, reference_umt5_attention)
    AttentionMaskInterface.register(REFERENCE_ATTENTION, eager_mask)  # additive float mask, as the reference's


def _dtype_kwarg(torch_dtype: torch.dtype | None) -> dict:
    if torch_dtype is None:
        return {}
    major = int(transformers.__version__.split(".")[0])
    return {"dtype": torch_dtype} if major >= 5 else {"torch_dtype": torch_dtype}


def _load_encoder_strictly(umt5_dir: Path, torch_dtype: torch.dtype | None) -> UMT5EncoderModel:
    try:
        model, info = UMT5EncoderModel.from_pretrained(umt5_dir, output_loading_info=True, **_dtype_kwarg(torch_dtype))
    except (OSError, RuntimeError, ValueError) as error:
        raise WeightsError(f"cannot load the UMT5 encoder from {umt5_dir}: {error}") from error
    check_loading_info(info, f"UMT5 encoder checkpoint at {umt5_dir}")
    return model


class TextEncoder:
    def __init__(self, model: UMT5EncoderModel, tokenizer, max_length: int = MAX_TEXT_TOKENS):
        _register_reference_attention()
        model.set_attn_implementation(REFERENCE_ATTENTION)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        for index in ERG_BLOCKS:
            query = self.model.encoder.block[index].layer[0].SelfAttention.q
            query.register_forward_hook(_scale_query_when_erg)

    @classmethod
    def from_pretrained(
        cls,
        umt5_dir: str | Path,
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> "TextEncoder":
        umt5_dir = Path(umt5_dir)
        model = _load_encoder_strictly(umt5_dir, torch_dtype)
        if device is not None:
            model = model.to(device)
        tokenizer = AutoTokenizer.from_pretrained(umt5_dir)
        return cls(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)

    @torch.no_grad()
    def encode(self, texts: list[str], erg: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(last_hidden_state (B, L, D), attention_mask (B, L) int64)``; ``erg`` gives the weakened variant."""
        input_ids, attention_mask = self.tokenize(texts)
        token = _erg_active.set(bool(erg))
        try:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        finally:
            _erg_active.reset(token)
        return hidden, attention_mask
