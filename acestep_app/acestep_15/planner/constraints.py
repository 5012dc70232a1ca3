"""Constrained decoding for the 5 Hz LM: what each next token may be, one small state machine per
sequence.

A generation is a script of segments run in order (``Script``):

* ``Forced`` writes fixed tokens: field names (``"bpm:"``), ``<think>`` / ``</think>``, the end of
  sequence, and values the user gave (injected as the tokens of ``" {value}\\n"``);
* ``Choice`` picks one string of a finite set (every bpm 30-300, every duration 10-600, the 70
  keyscales, the languages, the time signatures 2/3/4/6): a trie over the token ids of
  ``" {value}\\n"`` gives the tokens that continue some value, so the value and its line break are
  always one of the set. The language's first token is the most likely of the allowed ones
  (greedy), as the official decoder picks it;
* ``Caption`` is free text that may wrap over indented YAML lines and ends at the first line that
  would not be indented: right after a line break, the caption goes on only if the most likely next
  token starts with a space or a tab (the official rule), and then with such a token (the official
  decoder draws freely there and can write an unindented line into the caption); otherwise the next
  field's name is forced. Backticks, special tokens, audio codes and tokens that open an unindented
  line are banned, and 512 tokens end it;
* ``Line`` is one free line (``genres``, written in the understand / inspire / format modes);
* ``FreeText`` is the lyrics after ``</think>`` in those modes: no audio codes or special tokens,
  until the end of sequence;
* ``Codes`` is the audio-code phase: code tokens only, the end of sequence blocked until
  ``duration x 5`` codes are written and then forced.

``Vocabulary`` holds the token tables of one tokenizer (built once per loaded LM). Masks are bool
tensors over the logits, True where a token is banned. All of this is plain Python over token ids;
``sampling.GuidedSampler`` applies it inside ``generate``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .values import AUDIO_CODE_TOKEN, BPM_RANGE, CODEBOOK_SIZE, DURATION_RANGE, KEYSCALES, LANGUAGES, TIME_SIGNATURES

if TYPE_CHECKING:
    import torch

CAPTION_MAX_TOKENS = 512
LINE_MAX_TOKENS = 64
_INDENT = (" ", "\t")
_UNINDENTED_LINE = re.compile(r"\n[^ \t\n]")  # a line break followed, in the same token, by a new line's text


class Vocabulary:
    """Token tables of one LM tokenizer: each token's text, the audio-code tokens, ban masks and value tries.

    Args:
        tokenizer: the LM's transformers tokenizer.
        logits_size: the width of the LM's logits (its embedding rows; may exceed ``len(tokenizer)``).
        max_duration: the longest duration the LM may choose, in seconds (at most 600).
    """

    def __init__(self, tokenizer, logits_size: int, max_duration: int = DURATION_RANGE[1]):
        self.tokenizer = tokenizer
        self.logits_size = logits_size
        self.eos_id = tokenizer.eos_token_id
        self.pieces: list[str] = tokenizer.batch_decode(
            [[token] for token in range(len(tokenizer))], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        self.code_index: dict[int, int] = {}
        for token, piece in enumerate(self.pieces):
            found = AUDIO_CODE_TOKEN.match(piece)
            if found and int(found.group(1)) < CODEBOOK_SIZE:
                self.code_index[token] = int(found.group(1))
        if not self.code_index:
            raise ValueError("the LM's tokenizer has no <|audio_code_N|> tokens: not an ACE-Step 5 Hz LM")
        self.newline_id = self.encode("\n")[-1]
        added = set(tokenizer.get_added_vocab().values()) | set(tokenizer.all_special_ids)
        unused = set(range(len(self.pieces), logits_size))
        backticks = {token for token, piece in enumerate(self.pieces) if "`" in piece}
        inner_breaks = {token for token, piece in enumerate(self.pieces) if "\n" in piece[:-1]}
        unindenting = {token for token, piece in enumerate(self.pieces) if _UNINDENTED_LINE.search(piece)}
        self._bans = {
            "text": sorted(added | backticks | unused),
            "caption": sorted(added | backticks | unindenting | unused),
            "indent": sorted({token for token, piece in enumerate(self.pieces) if piece[:1] not in _INDENT} | unused),
            "line": sorted(added | backticks | inner_breaks | unused),
            "lyrics": sorted((added | set(self.code_index) | unused) - {self.eos_id}),
        }
        self._values = {
            "bpm": [str(v) for v in range(BPM_RANGE[0], BPM_RANGE[1] + 1)],
            "duration": [str(v) for v in range(DURATION_RANGE[0], min(max_duration, DURATION_RANGE[1]) + 1)],
            "keyscale": list(KEYSCALES),
            "language": list(LANGUAGES),
            "timesignature": [str(v) for v in TIME_SIGNATURES],
        }
        self._tries: dict[str, tuple[dict, int]] = {}
        self._masks: dict[tuple, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.logits_size

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def piece(self, token: int) -> str:
        return self.pieces[token] if token < len(self.pieces) else ""

    def value_tokens(self, value: object) -> list[int]:
        """The tokens of one field value as the chain of thought writes it: ``" {value}\\n"``."""
        return self.encode(f" {value}\n")

    def trie(self, field: str) -> tuple[dict, int]:
        """Nested ``{token: {...}}`` over the tokens of every allowed value of ``field`` (a value's
        last token, its line break, leads to an empty dict), and the longest value's token count."""
        if field not in self._tries:
            root: dict = {}
            depth = 0
            for value in self._values[field]:
                node = root
                tokens = self.value_tokens(value)
                for token in tokens:
                    node = node.setdefault(token, {})
                depth = max(depth, len(tokens))
            self._tries[field] = (root, depth)
        return self._tries[field]

    def mask(self, name: str, device: torch.device) -> torch.Tensor:
        """A cached ban mask: ``"text"`` (special and added tokens, backticks), ``"caption"`` (those
        and tokens that start an unindented line), ``"indent"`` (tokens that do not start with a
        space or a tab), ``"line"`` (special and added tokens, backticks, tokens with a line break
        before their end), ``"lyrics"`` (special and added tokens but the
        end of sequence, audio codes), ``"codes"`` (everything but the audio codes)."""
        import torch

        key = (name, str(device))
        if key not in self._masks:
            if name == "codes":
                mask = torch.ones(self.logits_size, dtype=torch.bool)
                mask[list(self.code_index)] = False
            else:
                mask = torch.zeros(self.logits_size, dtype=torch.bool)
                mask[self._bans[name]] = True
            self._masks[key] = mask.to(device)
        return self._masks[key]


def only(scores: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
    """``scores`` with every token but ``tokens`` set to -inf."""
    import torch

    kept = torch.full_like(scores, float("-inf"))
    index = torch.tensor(list(tokens), device=scores.device)
    kept[index] = scores[index]
    return kept


class Segment:
    """One stretch of the output. ``constrain`` returns the allowed scores for the next token, or
    None when the segment ended without writing (the caption ending at an unindented line);
    ``advance`` takes the chosen token and says whether the segment is complete. ``max_tokens`` is
    the most it writes (None: no bound but the generation's)."""

    max_tokens: int | None = None

    def constrain(self, scores: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def advance(self, token: int) -> bool:
        raise NotImplementedError


class Forced(Segment):
    def __init__(self, tokens: Sequence[int]):
        if not tokens:
            raise ValueError("a forced segment needs at least one token")
        self.tokens = list(tokens)
        self.position = 0
        self.max_tokens = len(self.tokens)

    def constrain(self, scores):
        return only(scores, [self.tokens[self.position]])

    def advance(self, token):
        self.position += 1
        return self.position == len(self.tokens)


class Choice(Segment):
    """One value of a finite set, spelled by the trie's tokens (``greedy_first``: the most likely first token)."""

    def __init__(self, vocabulary: Vocabulary, field: str, greedy_first: bool = False):
        self.node, self.max_tokens = vocabulary.trie(field)
        self.greedy = greedy_first

    def constrain(self, scores):
        allowed = list(self.node)
        if self.greedy:
            self.greedy = False
            allowed = [allowed[int(scores[allowed].argmax())]]
        return only(scores, allowed)

    def advance(self, token):
        self.node = self.node[token]
        return not self.node


class Caption(Segment):
    """Free text over indented lines (see the module docstring)."""

    def __init__(self, vocabulary: Vocabulary, limit: int = CAPTION_MAX_TOKENS):
        self.vocabulary = vocabulary
        self.limit = limit
        self.max_tokens = limit + 1  # the line break that ends a caption cut at the limit
        self.count = 0
        self.after_newline = False

    def constrain(self, scores):
        if self.after_newline:
            top = self.vocabulary.piece(int(scores.argmax()))
            if self.count >= self.limit or (top and top[0] not in _INDENT):
                return None
        if self.count >= self.limit:
            return only(scores, [self.vocabulary.newline_id])
        allowed = scores.masked_fill(self.vocabulary.mask("caption", scores.device), float("-inf"))
        if self.after_newline:  # a continuation line stays indented, whatever is drawn
            allowed = allowed.masked_fill(self.vocabulary.mask("indent", scores.device), float("-inf"))
        return allowed

    def advance(self, token):
        self.count += 1
        self.after_newline = "\n" in self.vocabulary.piece(token)
        return False  # ends in constrain, by looking at the next token


class Line(Segment):
    """One line of free text, ended by a token that ends in its only line break."""

    def __init__(self, vocabulary: Vocabulary, limit: int = LINE_MAX_TOKENS):
        self.vocabulary = vocabulary
        self.limit = limit
        self.max_tokens = limit + 1
        self.count = 0

    def constrain(self, scores):
        if self.count >= self.limit:
            return only(scores, [self.vocabulary.newline_id])
        return scores.masked_fill(self.vocabulary.mask("line", scores.device), float("-inf"))

    def advance(self, token):
        self.count += 1
        return "\n" in self.vocabulary.piece(token)


class FreeText(Segment):
    """Anything but audio codes and special tokens, until the end of sequence (forced after ``limit`` tokens)."""

    def __init__(self, vocabulary: Vocabulary, limit: int | None = None):
        self.vocabulary = vocabulary
        self.limit = limit
        self.max_tokens = None if limit is None else limit + 1
        self.count = 0

    def constrain(self, scores):
        if self.limit is not None and self.count >= self.limit:
            return only(scores, [self.vocabulary.eos_id])
        return scores.masked_fill(self.vocabulary.mask("lyrics", scores.device), float("-inf"))

    def advance(self, token):
        self.count += 1
        return token == self.vocabulary.eos_id


class Codes(Segment):
    """Audio codes only; with a target, exactly ``target`` of them and then the end of sequence."""

    def __init__(self, vocabulary: Vocabulary, target: int | None):
        self.vocabulary = vocabulary
        self.target = target
        self.max_tokens = None if target is None else target + 1
        self.count = 0

    def constrain(self, scores):
        eos = self.vocabulary.eos_id
        if self.target is not None and self.count >= self.target:
            return only(scores, [eos])
        allowed = scores.masked_fill(self.vocabulary.mask("codes", scores.device), float("-inf"))
        if self.target is None:
            allowed[eos] = scores[eos]
        return allowed

    def advance(self, token):
        if token in self.vocabulary.code_index:
            self.count += 1
            return False
        return True


class Script:
    """The segments of one sequence, run in order; once they are all done only the end of sequence is allowed."""

    def __init__(self, vocabulary: Vocabulary, segments: Sequence[Segment]):
        self.vocabulary = vocabulary
        self.segments = list(segments)
        self.index = 0

    @property
    def done(self) -> bool:
        return self.index >= len(self.segments)

    @property
    def max_tokens(self) -> int | None:
        """The most tokens the script writes, its end of sequence included (None: unbounded)."""
        bounds = [segment.max_tokens for segment in self.segments]
        return None if None in bounds else sum(bounds)

    def constrain(self, scores: torch.Tensor) -> torch.Tensor:
        while not self.done:
            allowed = self.segments[self.index].constrain(scores)
            if allowed is not None:
                return allowed
            self.index += 1
        return only(scores, [self.vocabulary.eos_id])

    def advance(self, token: int) -> None:
        if not self.done and self.segments[self.index].advance(token):
            self.index += 1


def cot_script(
    vocabulary: Vocabulary,
    fields: Sequence[str],
    given: dict[str, object] | None = None,
    *,
    then: str = "end",
    caption_tokens: int = CAPTION_MAX_TOKENS,
    lyrics_tokens: int | None = None,
) -> Script:
    """The chain of thought ``<think>\\n{field}: {value}\\n...</think>`` over ``fields`` in order.

    Args:
        fields: field names in writing order (see ``values.COT_FIELDS``).
        given: values to inject instead of letting the LM choose (the user's metadata).
        then: ``"end"``: the end of sequence after ``</think>`` (phase 1); ``"lyrics"``: free text
            after it until the end of sequence (understand / inspire / format).
        caption_tokens: the caption's token limit.
        lyrics_tokens: the lyrics' token limit (None: the generation's).
    """
    given = given or {}
    segments: list[Segment] = []
    opening = "<think>\n"
    for field in fields:
        segments.append(Forced(vocabulary.encode(f"{opening}{field}:")))
        opening = ""
        if field in given:
            segments.append(Forced(vocabulary.value_tokens(given[field])))
        elif field == "caption":
            segments.append(Caption(vocabulary, caption_tokens))
        elif field == "genres":
            segments.append(Line(vocabulary))
        else:
            segments.append(Choice(vocabulary, field, greedy_first=field == "language"))
    segments.append(Forced(vocabulary.encode(f"{opening}</think>")))
    segments.append(FreeText(vocabulary, lyrics_tokens) if then == "lyrics" else Forced([vocabulary.eos_id]))
    return Script(vocabulary, segments)


def codes_script(vocabulary: Vocabulary, target: int | None) -> Script:
    """The audio-code phase: ``target`` codes (any number without one), then the end of sequence."""
    return Script(vocabulary, [Codes(vocabulary, target)])
