"""The planner's chat messages per mode, the chain of thought as the LM reads it back, and the
generation length (facts sheet §3, checked by the planner parity vectors).

Every prompt is a system turn ``"# Instruction\\n{instruction}\\n\\n"`` plus a user turn (and, for the
audio-code phase, the assistant's chain of thought), rendered with the LM tokenizer's own chat
template by ``render``. Each conditional prompt has an unconditional twin for the LM's
classifier-free guidance (``*_uncond_messages``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .values import (
    CODES_PER_SECOND, DURATION_RANGE, INSTRUCTIONS, INSTRUMENTAL_LYRICS, MAX_MODEL_LEN, NO_USER_INPUT, PLAN_FIELDS,
)

Message = dict[str, str]
EMPTY_COT = "<think>\n</think>"


def system_message(task: str) -> Message:
    return {"role": "system", "content": f"# Instruction\n{INSTRUCTIONS[task]}\n\n"}


def conditions(caption: str, lyrics: str) -> str:
    """The user turn of both generation phases."""
    return f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"


def negative_prompt_given(negative_prompt: str | None) -> bool:
    """Whether a negative prompt steers the guidance: not None, blank or ``"NO USER INPUT"``."""
    return negative_prompt is not None and negative_prompt.strip() not in ("", NO_USER_INPUT)


def phase1_messages(caption: str, lyrics: str) -> list[Message]:
    """Phase 1 (the metadata chain of thought); rendered with a generation prompt."""
    return [system_message("generate"), {"role": "user", "content": conditions(caption, lyrics)}]


def phase1_uncond_messages(lyrics: str, negative_prompt: str | None = None) -> list[Message]:
    """Phase 1's unconditional prompt: the lyrics alone, or the negative prompt (unstripped) as caption."""
    if negative_prompt_given(negative_prompt):
        user = conditions(negative_prompt, lyrics)
    else:
        user = f"# Lyric\n{lyrics}\n"
    return [system_message("generate"), {"role": "user", "content": user}]


def phase2_messages(caption: str, lyrics: str, cot: str) -> list[Message]:
    """Phase 2 (the audio codes): the user's own caption, and the chain of thought as the assistant's
    turn; rendered without a generation prompt, the codes follow the rendered text."""
    return [
        system_message("generate"),
        {"role": "user", "content": conditions(caption, lyrics)},
        {"role": "assistant", "content": cot},
    ]


def phase2_uncond_messages(caption: str, lyrics: str, negative_prompt: str | None = None) -> list[Message]:
    """Phase 2's unconditional prompt: an empty chain of thought, the negative prompt as caption if given."""
    shown = negative_prompt if negative_prompt_given(negative_prompt) else caption
    return phase2_messages(shown, lyrics, EMPTY_COT)


def understand_messages(audio_codes: str) -> list[Message]:
    """Codes -> metadata and lyrics."""
    return [system_message("understand"), {"role": "user", "content": audio_codes}]


def inspire_messages(query: str, instrumental: bool) -> list[Message]:
    """A free-text idea -> metadata and lyrics (the official "simple mode")."""
    query = query if query.strip() else NO_USER_INPUT
    return [system_message("inspire"), {"role": "user", "content": f"{query}\n\ninstrumental: {str(instrumental).lower()}"}]


def format_messages(caption: str, lyrics: str) -> list[Message]:
    """A user's caption and lyrics -> a detailed caption, metadata and formatted lyrics."""
    caption = caption if caption.strip() else NO_USER_INPUT
    lyrics = lyrics if lyrics.strip() else INSTRUMENTAL_LYRICS
    return [system_message("rewrite"), {"role": "user", "content": f"# Caption\n{caption}\n\n# Lyric\n{lyrics}"}]


def cot_values(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata the chain of thought shows: fields set to None are left out, ``"N/4"`` time
    signatures shortened to ``"N"``, and digit-only strings read as numbers (a caption too)."""
    values: dict[str, Any] = {}
    for key in PLAN_FIELDS:
        value = metadata.get(key)
        if value is None:
            continue
        if key == "timesignature":
            value = str(value).split("/")[0] if str(value).endswith("/4") else value
        if isinstance(value, str) and value.isdigit():
            try:
                value = int(value)
            except ValueError:  # superscripts and the like pass isdigit() but are no numbers
                pass
        values[key] = value
    return values


def format_cot(metadata: Mapping[str, Any]) -> str:
    """The chain of thought the audio-code phase reads: ``"<think>\\n{yaml}\\n</think>"``.

    The YAML is PyYAML's ``dump`` with sorted keys and unicode kept, as the LM was trained on: long
    values wrap at 80 columns with a 2-space indent, and values that YAML would misread are quoted.
    """
    import yaml

    values = cot_values(metadata)
    body = yaml.dump(values, allow_unicode=True, sort_keys=True).strip() if values else ""
    return f"<think>\n{body}\n</think>"


def render(tokenizer, messages: list[Message], *, add_generation_prompt: bool) -> str:
    """The prompt text, by the LM tokenizer's chat template. A prompt rendered without a generation
    prompt (phase 2) ends with a line break, added if the template leaves none."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    if not add_generation_prompt and not text.endswith("\n"):
        text += "\n"
    return text


def max_new_tokens(duration: float | None, max_model_len: int = MAX_MODEL_LEN) -> int:
    """Tokens a generation may add: 5 a second of the (clamped) target duration plus 500 for the
    chain of thought, and never more than the context allows; the context's limit without a target."""
    limit = max_model_len - 64
    if duration is None or duration <= 0:
        return limit
    low, high = DURATION_RANGE
    return min(int(min(max(duration, low), high) * CODES_PER_SECOND) + 500, limit)
