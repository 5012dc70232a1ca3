"""Reading the LM's output: metadata from the chain of thought, the audio codes, and lyrics.

The chain of thought is read line by line, not as YAML, the way the official parser reads it (the
planner parity vectors pin the details): a line that starts without indentation and holds a colon
opens a field, indented lines continue it, tag lines (``<...>``) are skipped, and anything else is
ignored. Quoted YAML values stay quoted.
"""

from __future__ import annotations

import re
from typing import Any

from .values import AUDIO_CODE_ANYWHERE

_REASONING = (re.compile(r"<think>(.*?)</think>", re.DOTALL), re.compile(r"<reasoning>(.*?)</reasoning>", re.DOTALL))
_FIRST_CODE = "<|audio_code_"
_NUMBER_FIELDS = ("bpm", "duration")
_TEXT_FIELDS = ("genres", "keyscale", "language", "timesignature")
# "# Lyric" (any case, optional c/s/| after "Lyri") on the first line of the lyrics is a header.
_LYRIC_HEADER = re.compile(r"^#\s*lyri[cs|]?\s*\n", re.IGNORECASE)
_TRAILING_END_OF_TURN = re.compile(r"<\|im_end\|>\s*$")


def audio_codes(text: str) -> str:
    """Every ``<|audio_code_N|>`` in ``text``, concatenated (no range check)."""
    return "".join(AUDIO_CODE_ANYWHERE.findall(text))


def reasoning(text: str) -> str:
    """The chain of thought: inside ``<think>``/``<reasoning>`` tags, else everything before the first code."""
    for pattern in _REASONING:
        found = pattern.search(text)
        if found and found.group(1).strip():
            return found.group(1).strip()
        if found:
            break  # an empty block: fall back to the text before the codes
    return text.split(_FIRST_CODE)[0].strip()


def join_caption(value: str) -> str:
    """A caption written over several YAML lines, as one line: lines stripped, blanks dropped."""
    return " ".join(line.strip() for line in value.split("\n") if line.strip())


def field_value(key: str, value: str) -> Any:
    if key in _NUMBER_FIELDS:
        try:
            return int(value.strip())
        except ValueError:
            return value.strip()
    if key == "caption":
        return join_caption(value)
    return value.strip()


def parse_metadata(text: str) -> dict[str, Any]:
    """The known fields of the chain of thought in ``text``: bpm and duration as ints where they
    parse, the caption joined onto one line, genres / keyscale / language / timesignature as text.
    A repeated key keeps its last value; unknown keys are dropped."""
    metadata: dict[str, Any] = {}
    key, lines = None, []

    def close() -> None:
        if key in (*_NUMBER_FIELDS, "caption", *_TEXT_FIELDS) and lines:
            metadata[key] = field_value(key, "\n".join(lines))

    for line in reasoning(text).split("\n"):
        if line.strip().startswith("<"):
            continue
        if line and not line[0].isspace() and ":" in line:
            close()
            name, first = line.split(":", 1)
            key, lines = name.strip().lower(), ([first] if first.strip() else [])
        elif line[:1] in (" ", "\t") and key is not None:
            lines.append(line)
    close()
    return metadata


def parse_output(text: str) -> tuple[dict[str, Any], str]:
    """``(metadata, audio codes)`` of one LM output."""
    return parse_metadata(text), audio_codes(text)


def extract_lyrics(text: str) -> str:
    """The lyrics the LM wrote after its chain of thought (understand / inspire / format modes):
    the text after the first ``</think>``, without a leading ``# Lyric`` header or a trailing
    ``<|im_end|>``; ``""`` when there is no ``</think>``."""
    _, closed, rest = text.partition("</think>")
    if not closed:
        return ""
    rest = _LYRIC_HEADER.sub("", rest.strip(), count=1)
    return _TRAILING_END_OF_TURN.sub("", rest).strip()
