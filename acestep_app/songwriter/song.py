"""A song draft: the lyric budget, the writer interface, and how model output becomes tags and lyrics."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import BaseModel, ValidationError, ValidationInfo, field_validator

logger = logging.getLogger(__name__)


INSTRUMENTAL_LYRICS = "[inst]"

SECONDS_PER_LINE = 4.0
SUNG_SHARE = 0.75
LINES_PER_SECTION = 4
MAX_LINES = 48
MAX_TAGS = 12
MAX_TAG_CHARS = 40
WRAP_LINE_CHARS = 80
MAX_LINE_CHARS = 120
MAX_WORD_CHARS = 30  # longer "words" (e.g. 5,000 x's) are not words: the fallback skips them
MAX_PROMPT_CHARS = 1000

SongSource = Literal["llm", "openai", "fallback"]


@dataclass(frozen=True)
class Song:
    """What a song writer returns.

    Attributes:
        tags: comma-separated style tags, e.g. ``"lofi, hiphop, chill, 85 bpm, female vocals"``.
        lyrics: ``[section]``-structured lyrics fitted to the duration, or exactly ``"[inst]"``.
        source: ``"llm"`` (local model), ``"openai"`` (hosted endpoint) or ``"fallback"``.
        logs: human-readable lines for the response logs (which backend, attempts, fallback reason).
        tokens: tokens the language model generated over all attempts (0 for the fallback).
        prompt_tokens: prompt tokens the local model read over all attempts (0 for other writers).
    """

    tags: str
    lyrics: str
    source: SongSource
    logs: list[str] = field(default_factory=list)
    tokens: int = 0
    prompt_tokens: int = 0


class SongWriter(Protocol):
    """Turns a free-text prompt into tags and lyrics. Implementations load their model once."""

    description: str

    def write(self, prompt: str, *, instrumental: bool, duration: float, seed: int) -> Song: ...


# ----------------------------------------------------------------------------------------------
# Length rule and validation
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LyricBudget:
    """How much lyric a song of ``duration`` seconds gets (see the module docstring)."""

    duration: float

    @property
    def max_lines(self) -> int:
        return min(MAX_LINES, max(2, round(self.duration * SUNG_SHARE / SECONDS_PER_LINE)))

    @property
    def min_lines(self) -> int:
        return max(1, self.max_lines // 4)

    @property
    def sections(self) -> int:
        """Sections the model is asked for."""
        return min(8, math.ceil(self.max_lines / LINES_PER_SECTION))

    @property
    def max_sections(self) -> int:
        return self.sections + 2

    @property
    def max_new_tokens(self) -> int:
        """Token budget for the lyrics value: ~14 tokens a line, 6 a header, plus slack."""
        return 24 + 14 * self.max_lines + 6 * self.max_sections


_SECTION_WORDS = "verse|chorus|pre-chorus|prechorus|bridge|intro|outro|hook|refrain|interlude|break"
_BRACKET_HEADER = re.compile(r"^\[\s*([^\[\]]{1,30}?)\s*\]$")
_WORD_HEADER = re.compile(rf"^({_SECTION_WORDS})(\s*\d+)?\s*:?$", re.IGNORECASE)
_TAG_SPLIT = re.compile(r"[,，、;；\n]")
_INLINE_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；])")
_CLAUSE_END = re.compile(r"(?<=[,，、])\s*")


def _section_label(line: str) -> str | None:
    """``"[Verse 1]"`` / ``"Chorus:"`` -> ``"verse"`` / ``"chorus"``; None for a sung line."""
    match = _BRACKET_HEADER.match(line) or _WORD_HEADER.match(line)
    if match is None:
        return None
    label = re.sub(r"[\s\d:]+$", "", match.group(1).strip().lower())
    return re.sub(r"\s+", " ", label) or "verse"


def normalize_tags(raw: str) -> str:
    """Split, clean, lowercase and de-duplicate tags; raise ``ValueError`` if fewer than two remain."""
    tags: list[str] = []
    for piece in _TAG_SPLIT.split(raw):
        tag = re.sub(r"\s+", " ", piece.strip(" \t\"'`.#*-")).lower()
        if not tag or len(tag) > MAX_TAG_CHARS or any(c in tag for c in "[]{}:"):
            continue
        if tag not in tags:
            tags.append(tag)
    if len(tags) < 2:
        raise ValueError(f"need at least 2 comma-separated tags, got {raw[:80]!r}")
    return ", ".join(tags[:MAX_TAGS])


def wrap_line(line: str) -> list[str]:
    """Split a prose line longer than ``WRAP_LINE_CHARS`` at sentence, then clause, punctuation.

    Small models often write a verse as one paragraph; ACE-Step wants one sung phrase per line.
    Raises ``ValueError`` when a piece is still longer than ``MAX_LINE_CHARS``.
    """
    if len(line) <= WRAP_LINE_CHARS:
        return [line]
    lines: list[str] = []
    for sentence in filter(None, (s.strip() for s in _SENTENCE_END.split(line))):
        packing = False  # clauses of one sentence share a line while they fit
        for clause in filter(None, (c.strip() for c in _CLAUSE_END.split(sentence))):
            if packing and len(lines[-1]) + 1 + len(clause) <= WRAP_LINE_CHARS:
                lines[-1] = f"{lines[-1]} {clause}"
            else:
                lines.append(clause)
            packing = True
    if any(len(piece) > MAX_LINE_CHARS for piece in lines):
        raise ValueError(f"a line is longer than {MAX_LINE_CHARS} characters")
    return lines


def check_variety(lyrics: str) -> str:
    """Reject degenerate loops (from 4 lines on, at least a third of the sung lines must differ) and
    copies of the prompt's format example."""
    sung = [line.lower() for line in lyrics.splitlines() if line and not line.startswith("[")]
    if len(sung) >= 4 and 3 * len(set(sung)) < len(sung):
        raise ValueError(f"lyrics repeat the same lines ({len(set(sung))} distinct of {len(sung)})")
    if set(sung) & _EXAMPLE_LINES:
        raise ValueError("lyrics copy the format example")
    return lyrics


def fit_lyrics(raw: str, budget: LyricBudget) -> str:
    """Normalise section headers, wrap prose lines (``wrap_line``) and cut the lyric to ``budget``.

    Raises ``ValueError`` when the lyric has fewer than ``budget.min_lines`` sung lines, a line longer
    than ``MAX_LINE_CHARS`` after wrapping, or uses the instrumental marker.
    """
    sections: list[tuple[str, list[str]]] = []
    for line in (line.strip() for line in raw.splitlines()):
        if not line:
            continue
        label = _section_label(line)
        if label is not None:
            if label == "inst":
                raise ValueError("the instrumental marker is not a lyric")
            sections.append((label, []))
            continue
        line = re.sub(r"\s+", " ", _INLINE_BRACKETS.sub(" ", line)).strip()  # "[guitar solo] la" -> "la"
        if not line:
            continue
        if not sections:
            sections.append(("verse", []))
        sections[-1][1].extend(wrap_line(line))

    kept: list[str] = []
    sung = 0
    for label, lines in (s for s in sections if s[1]):
        if sung >= budget.max_lines or len(kept) >= budget.max_sections:
            break
        lines = lines[: budget.max_lines - sung]
        sung += len(lines)
        kept.append("\n".join([f"[{label}]", *lines]))
    if sung < budget.min_lines:
        raise ValueError(f"{sung} sung lines, a {budget.duration:g} s song needs {budget.min_lines}")
    return "\n\n".join(kept)


class SongDraft(BaseModel):
    """A model's reply. Validate with ``context={"budget": LyricBudget, "instrumental": bool}``."""

    tags: str
    lyrics: str = INSTRUMENTAL_LYRICS

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, value: str, info: ValidationInfo) -> str:
        if (info.context or {}).get("instrumental"):
            value = ",".join(tag for tag in _TAG_SPLIT.split(value) if "vocal" not in tag.lower())
        return normalize_tags(value)

    @field_validator("lyrics")
    @classmethod
    def _fit_lyrics(cls, value: str, info: ValidationInfo) -> str:
        context = info.context or {}
        if context.get("instrumental"):
            return INSTRUMENTAL_LYRICS
        return check_variety(fit_lyrics(value, context.get("budget") or LyricBudget(60.0)))


def parse_draft(text: str, *, budget: LyricBudget, instrumental: bool) -> SongDraft:
    """Parse a JSON reply (code fences and surrounding chatter tolerated) into a valid ``SongDraft``.

    Raises ``ValueError`` (``ValidationError`` is one) with a short reason.
    """
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("reply holds no JSON object")
    data = json.loads(text[start : end + 1], strict=False)  # models write raw newlines in strings
    if not isinstance(data, dict):
        raise ValueError("reply is not a JSON object")
    return SongDraft.model_validate(data, context={"budget": budget, "instrumental": instrumental})


def short_reason(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}".replace("Value error, ", "")
    return str(error).splitlines()[0][:160]


# ----------------------------------------------------------------------------------------------
# Instructions shared by the LLM backends
# ----------------------------------------------------------------------------------------------

# Shows the format (small models follow an example better than a description); not its words.
_EXAMPLE_REPLY = json.dumps(
    {
        "tags": "acoustic pop, guitar, warm, 100 bpm, male vocals",
        "lyrics": "[verse]\nMorning light across the floor\nCoffee steaming by the door\n\n[chorus]\nStay a while, stay a while",
    },
    ensure_ascii=False,
)
_EXAMPLE_LINES = frozenset(
    line.lower() for line in json.loads(_EXAMPLE_REPLY)["lyrics"].splitlines() if line and not line.startswith("[")
)
_TAGS_GUIDE = 'tags: 4-10 lowercase comma-separated music tags: genre, instruments, mood, "N bpm"'


def build_messages(prompt: str, *, instrumental: bool, budget: LyricBudget) -> list[dict[str, str]]:
    """Chat messages asking for the JSON song; kept short (every prompt token is prefilled per attempt).

    Instrumental songs ask for tags only."""
    if instrumental:
        system = (
            'Describe instrumental music for a text-to-music model. Reply as JSON like '
            f'{{"tags": "ambient, piano, calm, 70 bpm"}}. {_TAGS_GUIDE}; no vocals.'
        )
    else:
        system = (
            f"Write a song for a text-to-music model. Reply as JSON like {_EXAMPLE_REPLY}. {_TAGS_GUIDE}, "
            f"vocal type. lyrics: {budget.sections} section(s), at most {budget.max_lines} lines in all, each "
            "section opening with a header such as [verse], [chorus] or [bridge], one sung line per row, in the "
            "language the user asks for, else the prompt's."
        )
    return [{"role": "system", "content": system}, {"role": "user", "content": prompt.strip()[:MAX_PROMPT_CHARS]}]


# ----------------------------------------------------------------------------------------------
# Deterministic fallback
# ----------------------------------------------------------------------------------------------

