"""Lyric tokenizer: lyrics text -> ids of the Coqui XTTS-v2 style BPE vocabulary (spec §3).

Each line gets its language from LangSegment (py3langid + script heuristics), is cleaned and
romanised for that language (``line_cleaner``), prefixed with the language tag and BPE-encoded
with "[SPACE]" (id 2) between words. Lines starting with a ``[...]`` structure tag are always
encoded as English.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

import torch
from tokenizers import Tokenizer

from acestep_app.acestep_v1.lyrics.line_cleaner import clean_line

logger = logging.getLogger(__name__)

STOP_ID = 0
UNK_ID = 1
SPACE_ID = 2
START_ID = 261

LANGUAGE_TAG_IDS = {
    "en": 259, "de": 260, "fr": 262, "ru": 267, "es": 284, "it": 285, "pt": 286, "cs": 293, "pl": 294,
    "tr": 295, "nl": 297, "ar": 5022, "zh-cn": 5023, "ja": 5412, "hu": 5753, "ko": 6152, "hi": 6680,
}  # fmt: skip
STRUCTURE_TAG_IDS = {
    tag: 6681 + i
    for i, tag in enumerate(
        ["start", "intro", "verse", "chorus", "bridge", "outro", "end", "inst", "solo", "hook", "pre-chorus", "break"]
    )
}
SUPPORTED_LANGUAGES = frozenset(code.split("-")[0] for code in LANGUAGE_TAG_IDS)
DEFAULT_LANGUAGE = "en"
STRUCTURE_LINE_RE = re.compile(r"\[.*?\]")

# ISO codes LangSegment may answer with (its "default" filter list, i.e. py3langid's languages).
LANGSEGMENT_FILTERS = (
    "af am an ar as az be bg bn br bs ca cs cy da de dz el en eo es et eu fa fi fo fr ga gl gu he hi hr ht hu hy "
    "id is it ja jv ka kk km kn ko ku ky la lb lo lt lv mg mk ml mn mr ms mt nb ne nl nn no oc or pa pl ps pt qu "
    "ro ru rw se si sk sl sq sr sv sw ta te th tl tr ug uk ur vi vo wa xh zh zu"
).split()

# LangSegment keeps its state on the class, so detection is serialised process-wide.
_langsegment_lock = threading.Lock()


def detect_language(line: str) -> str:
    """Dominant language of a line by LangSegment character counts; a second language wins over "en"."""
    # Imported outside the fallback below: a broken install must fail loudly,
    # not silently turn every line into "en".
    from LangSegment import LangSegment

    try:
        with _langsegment_lock:
            LangSegment.setfilters(list(LANGSEGMENT_FILTERS))
            LangSegment.getTexts(line)
            counts = LangSegment.getCounts()
        language = counts[0][0]
        if language == "en" and len(counts) > 1:
            language = counts[1][0]
        return language
    except Exception:
        return DEFAULT_LANGUAGE


def encoding_language(line: str) -> str:
    if STRUCTURE_LINE_RE.match(line):
        return DEFAULT_LANGUAGE
    language = detect_language(line)
    return language if language in SUPPORTED_LANGUAGES else DEFAULT_LANGUAGE


class LyricTokenizer:
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: str | Path) -> "LyricTokenizer":
        return cls(Tokenizer.from_file(str(path)))

    @property
    def vocab_size(self) -> int:
        return max(self.tokenizer.get_vocab(with_added_tokens=True).values()) + 1

    def encode_line(self, line: str, lang: str) -> list[int]:
        """Ids of one line in a given language: language tag, then words separated by [SPACE]."""
        base = lang.split("-")[0]
        text = clean_line(line, base)
        tag = "zh-cn" if base == "zh" else base
        return self.tokenizer.encode(f"[{tag}]{text}".replace(" ", "[SPACE]")).ids

    def tokenize_lyrics(self, lyrics: str) -> list[int]:
        ids = [START_ID]
        for raw_line in lyrics.split("\n"):
            line = raw_line.strip()
            if not line:
                ids.append(SPACE_ID)
                continue
            lang = encoding_language(line)
            try:
                line_ids = self.encode_line(line, lang)
            except Exception as error:  # the reference drops a line it cannot encode
                logger.warning("lyric line skipped (%s, lang %s): %r", error, lang, line)
                continue
            ids += line_ids + [SPACE_ID]
        return ids

    def ids_and_mask(
        self, lyrics_list: list[str], device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch of lyric ids and masks, right-padded with 0; empty lyrics are one masked [STOP] token."""
        rows = [self.tokenize_lyrics(lyrics) if len(lyrics) > 0 else [] for lyrics in lyrics_list]
        length = max([len(row) for row in rows] + [1])
        ids = torch.zeros((len(rows), length), dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids.to(device), mask.to(device)


DEMO_BASE_CHARACTERS = (
    "!'(),-.:;?" + "0123456789" + "abcdefghijklmnopqrstuvwxyz" + "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœğışž"
)
DEMO_MERGES = ("t h", "th e", "i n", "a n", "e r", "o n", "o u", "in g", "l o", "lo v", "lov e", "y ou")


def write_demo_vocab(path: str | Path) -> int:
    """Write a small BPE vocabulary in the lyric vocab's file format; returns its vocab size (max id + 1).

    Special, language and structure tokens keep their official ids, so a demo checkpoint is driven by
    the same tokenize procedure; ordinary text maps to characters and a handful of merges.
    """
    special = {"[STOP]": STOP_ID, "[UNK]": UNK_ID, "[SPACE]": SPACE_ID, "[START]": START_ID}
    special |= {f"[{code}]": i for code, i in LANGUAGE_TAG_IDS.items()}
    special |= {f"[{tag}]": i for tag, i in STRUCTURE_TAG_IDS.items()}
    taken = set(special.values())
    free_ids = (i for i in range(max(taken)) if i not in taken)
    pieces = list(dict.fromkeys(DEMO_BASE_CHARACTERS)) + [merge.replace(" ", "") for merge in DEMO_MERGES]
    vocab = dict(special) | {piece: next(free_ids) for piece in pieces}
    document = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "special": True, "content": token, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False}
            for token, i in sorted(special.items(), key=lambda item: item[1])
        ],  # fmt: skip
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "[UNK]",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "vocab": dict(sorted(vocab.items(), key=lambda item: item[1])),
            "merges": list(DEMO_MERGES),
        },
    }
    Path(path).write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
    return max(vocab.values()) + 1
