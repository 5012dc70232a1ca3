"""Constrained decoding of a flat JSON object of strings with keys fixed in advance.

``JsonSkeletonProcessor`` is a transformers ``LogitsProcessor`` for ``generate``: the caller puts the
opening ``{"first": "`` at the end of the prompt, the processor forces every other character of the
skeleton (``", "next": "`` between values, ``"}`` and an end-of-sequence token at the end) and leaves
the model free only inside the string values. Inside a value it bans the tokens that would break the
JSON: special tokens, invalid escapes, and tokens whose unescaped quote is not followed by the next
piece of the skeleton. A value may not close before ``min_chars`` characters, and one that reaches ``max_tokens``
is closed by force and marked as cut. Batch size 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

_ESCAPED_CHARS = frozenset('"\\/bfnrt')


@dataclass(frozen=True)
class JsonField:
    """One string value of the object.

    Attributes:
        name: the key.
        max_tokens: tokens the model may write in the value before it is closed by force.
        min_chars: characters the value needs before it may close.
        opener: text forced at the start of the value (e.g. ``"[verse]\\\\n"``); part of the value.
    """

    name: str
    max_tokens: int
    min_chars: int = 0
    opener: str = ""


def string_end(text: str, escaped: bool = False) -> tuple[int | None, bool]:
    """``(index of the first unescaped double quote or None, escape pending at the end)``."""
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return index, False
    return None, escaped


def value_piece_ok(piece: str, closing: str | None, escaped: bool) -> bool:
    """Whether ``piece`` may follow inside a JSON string value: its escapes are valid (``\\u`` is
    not offered) and an unescaped quote, if any, starts ``closing`` with the rest of the piece."""
    for index, char in enumerate(piece):
        if escaped:
            if char not in _ESCAPED_CHARS:
                return False
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return closing is not None and closing.startswith(piece[index:])
    return True


def trim_unfinished(body: str) -> str:
    """``body`` up to its last line break (JSON-escaped or raw), else up to its last clause mark."""
    cut = max(body.rfind("\\n"), body.rfind("\n"))
    if cut <= 0:
        cut = max(body.rfind(mark) + 1 for mark in ",.!?;，。！？；")
    return (body[:cut] if cut > 0 else body).rstrip("\\")


def opening(fields: Sequence[JsonField]) -> str:
    """The text the prompt ends with: the object up to the first value's opener."""
    return f'{{"{fields[0].name}": "{fields[0].opener}'


class TokenPieces:
    """The text every token adds mid-sequence, and ban masks built from it (once per tokenizer).

    A token's piece is read as ``decode([anchor, token])`` minus the anchor's text, so tokenizers that
    drop a leading space when decoding a lone token are read right too.

    Args:
        tokenizer: a transformers tokenizer.
        stop_ids: end-of-sequence tokens; the first one closes the generation.
    """

    def __init__(self, tokenizer, stop_ids: Sequence[int]):
        self.tokenizer = tokenizer
        self.end_id = stop_ids[0]
        anchor = tokenizer("a", add_special_tokens=False)["input_ids"][0]
        prefix = len(tokenizer.decode([anchor]))
        size = len(tokenizer)
        texts = tokenizer.batch_decode([[anchor, token] for token in range(size)], clean_up_tokenization_spaces=False)
        self.pieces = [text[prefix:] for text in texts]
        special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
        self.never_in_value = sorted(special | set(stop_ids))
        self.with_quote_or_backslash = [t for t, piece in enumerate(self.pieces) if '"' in piece or "\\" in piece]
        self._masks: dict[tuple, torch.Tensor] = {}
        self._first_tokens: dict[str, int] = {}

    def piece(self, token: int) -> str:
        return self.pieces[token] if token < len(self.pieces) else ""

    def value_ban(self, closing: str | None, escaped: bool, size: int, device: torch.device) -> torch.Tensor:
        """Bool mask of tokens banned inside a value when an escape is (not) pending: special tokens,
        invalid escapes, and unescaped quotes that do not start ``closing`` (all when ``closing`` is None)."""
        key = (closing, escaped, size, device)
        if key not in self._masks:
            suspects = range(len(self.pieces)) if escaped else self.with_quote_or_backslash
            banned = [t for t in suspects if not value_piece_ok(self.pieces[t], closing, escaped)]
            banned += self.never_in_value + list(range(len(self.pieces), size))
            mask = torch.zeros(size, dtype=torch.bool)
            mask[[t for t in banned if t < size]] = True
            self._masks[key] = mask.to(device)
        return self._masks[key]

    def first_token(self, text: str) -> int:
        """A token that spells a non-empty prefix of ``text`` (the tokenizer's own first choice if it fits)."""
        if text not in self._first_tokens:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if ids and self.piece(ids[0]) and text.startswith(self.piece(ids[0])):
                self._first_tokens[text] = ids[0]
            else:
                fits = [t for t, p in enumerate(self.pieces) if p and text.startswith(p) and t not in self.never_in_value]
                if not fits:
                    raise ValueError(f"the tokenizer cannot spell {text!r}")
                self._first_tokens[text] = max(fits, key=lambda t: len(self.pieces[t]))
        return self._first_tokens[text]


class JsonSkeletonProcessor(LogitsProcessor):
    """Holds ``generate`` to ``{"k1": "v1", "k2": "v2", ...}`` (see the module docstring).

    After generation, ``value_ids[i]`` holds the tokens written in field ``i`` (the closing token
    included, when the value closed itself) and ``cut[i]`` says whether it was closed by force.

    Args:
        pieces: the tokenizer's ``TokenPieces``.
        fields: the values, in order.
        prompt_length: tokens in the prompt (which ends with ``opening(fields)``).
    """

    def __init__(self, pieces: TokenPieces, fields: Sequence[JsonField], prompt_length: int):
        self.pieces = pieces
        self.fields = list(fields)
        self.prompt_length = prompt_length
        # What follows each value, closing quote first.
        self.closings = [f'", "{f.name}": "{f.opener}' for f in self.fields[1:]] + ['"}']
        self.value_ids: list[list[int]] = [[] for _ in self.fields]
        self.cut = [False] * len(self.fields)
        self.field = 0  # the value being written; len(fields) once the object is closed
        self.forcing = ""  # skeleton text still to write before the next value
        self.chars = 0
        self.escaped = False
        self.seen = 0

    @property
    def done(self) -> bool:
        return self.field >= len(self.fields)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for token in input_ids[0, self.prompt_length + self.seen :].tolist():
            self._advance(token)
            self.seen += 1
        if self.done or self.forcing:
            token = self.pieces.end_id if self.done else self.pieces.first_token(self.forcing)
            forced = torch.full_like(scores, float("-inf"))
            forced[:, token] = 0.0
            return forced
        field = self.fields[self.field]
        closing = self.closings[self.field] if self.chars >= field.min_chars else None
        return scores.masked_fill(self.pieces.value_ban(closing, self.escaped, scores.shape[-1], scores.device), float("-inf"))

    def json_text(self, tokenizer) -> str:
        """The object as written; a value closed by force loses its unfinished last line (or, in a
        one-line value, its unfinished clause)."""
        values = []
        for ids, cut in zip(self.value_ids, self.cut):
            body = tokenizer.decode(ids, skip_special_tokens=True)
            end, _ = string_end(body)
            values.append(body[:end] if end is not None and not cut else trim_unfinished(body))
        return "{" + ", ".join(f'"{f.name}": "{f.opener}{v}"' for f, v in zip(self.fields, values)) + "}"

    def _advance(self, token: int) -> None:
        if self.done:
            return
        piece = self.pieces.piece(token)
        if self.forcing:
            self.forcing = self.forcing[len(piece) :]
            if not self.forcing:
                self._next_field()
            return
        self.value_ids[self.field].append(token)
        end, self.escaped = string_end(piece, self.escaped)
        if end is not None:  # the value closed itself; the rest of the piece starts the skeleton
            self.forcing = self.closings[self.field][len(piece) - end :]
            if not self.forcing:
                self._next_field()
            return
        self.chars += len(piece)
        if len(self.value_ids[self.field]) >= self.fields[self.field].max_tokens:
            self.cut[self.field] = True
            self.forcing = self.closings[self.field]

    def _next_field(self) -> None:
        self.field += 1
        self.chars = 0
        self.escaped = False
