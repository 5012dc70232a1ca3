"""How long lyrics take to sing, and a warning when the requested duration is clearly too short.

ACE-Step squeezes or skips lyrics that do not fit the duration, the most common complaint about it.
Before generating, the Engine estimates the shortest time the lyrics can be sung in and, when the
request is shorter than that, says so (it never refuses: the caller may want a fast rap).

The rule (stated in the README too): structure tags such as ``[verse]`` are dropped, then every
character run is counted in syllables by its script and divided by a brisk singing rate:

- alphabetic scripts (Latin, Cyrillic, Greek): one syllable per vowel group of a word (at least
  one per word, an English silent final "e" not counted), sung at 4 syllables/s;
- Han characters (Chinese): one syllable each, 4/s;
- kana (Japanese): one mora each, small ゃ/ゅ/ょ-type kana excepted, 6/s; Han characters in a
  line with kana are read as Japanese, 6/s;
- Hangul (Korean): one syllable per block, 5/s.

The sum is the *sung* time, a lower bound: songs also need an intro, breaths and breaks. So the
duration suggested is 1.5 x the sung time, rounded up to 5 s (at most the schema's 240 s), and the
warning fires only when the request is shorter than the sung time itself.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

ALPHABETIC_RATE = 4.0
CHINESE_RATE = 4.0
JAPANESE_RATE = 6.0
KOREAN_RATE = 5.0
ROOM_FACTOR = 1.5  # intro, breaths and instrumental breaks around the sung part
ROUND_TO_SECONDS = 5
MAX_DURATION = 240.0

STRUCTURE_TAG = re.compile(r"\[[^\]\n]*\]")
WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
VOWEL_GROUP = re.compile(r"[aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿāăąēĕėęěīĭįıōŏőœūŭůűųαεηιουωаеёиоуыэюяіїєў]+")
SMALL_KANA = set("ぁぃぅぇぉゃゅょゎァィゥェォャュョヮ")


def _is_han(char: str) -> bool:
    code = ord(char)
    return 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x2FA1F


def _is_kana(char: str) -> bool:
    return 0x3040 <= ord(char) <= 0x30FF or 0x31F0 <= ord(char) <= 0x31FF


def _is_hangul(char: str) -> bool:
    return 0xAC00 <= ord(char) <= 0xD7A3


def strip_structure(lyrics: str) -> str:
    """The sung text: ``[verse]``, ``[chorus]``, ``[inst]`` and other bracketed tags removed."""
    return STRUCTURE_TAG.sub(" ", lyrics)


def alphabetic_syllables(word: str) -> int:
    """Vowel groups of one word (at least one); a silent final English "e" ("time", not "table") is not one."""
    lowered = unicodedata.normalize("NFC", word.lower())
    groups = len(VOWEL_GROUP.findall(lowered))
    if groups > 1 and lowered.endswith("e") and not lowered.endswith(("le", "ee", "ie", "ye")) and lowered[-2] not in "aeiouy":
        groups -= 1
    return max(groups, 1)


@dataclass(frozen=True)
class SungTime:
    syllables: int
    seconds: float


def line_sung_time(line: str) -> SungTime:
    han = sum(1 for char in line if _is_han(char))
    kana = sum(1 for char in line if _is_kana(char) and char not in SMALL_KANA)
    hangul = sum(1 for char in line if _is_hangul(char))
    alphabetic = sum(alphabetic_syllables(word) for word in WORD.findall(line) if _is_alphabetic_word(word))
    han_rate = JAPANESE_RATE if kana else CHINESE_RATE
    seconds = alphabetic / ALPHABETIC_RATE + han / han_rate + kana / JAPANESE_RATE + hangul / KOREAN_RATE
    return SungTime(alphabetic + han + kana + hangul, seconds)


def _is_alphabetic_word(word: str) -> bool:
    return not any(_is_han(char) or _is_kana(char) or _is_hangul(char) for char in word)


def sung_time(lyrics: str) -> SungTime:
    """The shortest time ``lyrics`` can be sung in, by the module's per-script rule."""
    lines = [line_sung_time(line) for line in strip_structure(lyrics).splitlines()]
    return SungTime(sum(line.syllables for line in lines), sum(line.seconds for line in lines))


def fitting_duration(sung_seconds: float, max_duration: float = MAX_DURATION) -> float:
    """A duration with room for the lyrics: ROOM_FACTOR x the sung time, up to 5 s, at most ``max_duration``."""
    padded = math.ceil(sung_seconds * ROOM_FACTOR / ROUND_TO_SECONDS) * ROUND_TO_SECONDS
    return float(min(max(padded, ROUND_TO_SECONDS), max_duration))


def duration_warning(lyrics: str, duration: float, max_duration: float = MAX_DURATION) -> str | None:
    """A one-line warning when ``duration`` seconds are clearly too short for ``lyrics``, else None.

    ``max_duration`` is the longest song the endpoint allows (v1: 240 s; ACE-Step 1.5: 600 s).
    """
    estimate = sung_time(lyrics)
    if estimate.seconds <= duration:
        return None
    suggestion = fitting_duration(estimate.seconds, max_duration)
    if estimate.seconds > max_duration:
        advice = f"even {max_duration:.0f}s (the longest allowed) is short; shorten the lyrics"
    else:
        advice = f"a duration of about {suggestion:.0f}s would fit"
    return (f"warning: the lyrics ({estimate.syllables} syllables) take at least {estimate.seconds:.0f}s to sing, "
            f"longer than the {duration:g}s requested, so parts may be rushed or skipped; {advice}")
