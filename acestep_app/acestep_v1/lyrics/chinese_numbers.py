"""Chinese lyric number normalisation: digits become Chinese number words, punctuation becomes ",".

Written from the behavioural spec ``shared/spec/lyric-normalisation.md`` §3; the word and unit tables
live in ``normalisation_tables``. The reference's quirks are kept on purpose, because the lyric token
ids the model was trained on depend on them:

* Each rewrite category first lists its hits on the whole text, then replaces, hit by hit, the
  *first occurrence anywhere* of the hit's text (so "3120和12个" gives "三十二零和十二个").
* The text is read between a front and a back marker, so that "a non-digit before the number" also
  holds at the very start; user "^"/"$" touching the ends disappear with the markers.
* ``\\d`` is Unicode-wide, but leading-zero trimming only knows ASCII "0".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from acestep_app.acestep_v1.lyrics.tables import (
    CHINESE_DIGITS,
    CHINESE_FRACTION_JOINER,
    CHINESE_LANDLINE_AREAS,
    CHINESE_MOBILE_HEADS,
    CHINESE_MONEY_MAGNITUDES,
    CHINESE_MONEY_SUBUNITS,
    CHINESE_MONEY_WORDS,
    CHINESE_NUMBER_MODIFIERS,
    CHINESE_PERCENT_PREFIX,
    CHINESE_PLACE_UNITS,
    CHINESE_POINT,
    CHINESE_PUNCTUATION,
    CHINESE_QUANTIFIERS,
    CHINESE_TWO_BEFORE_UNIT,
    CHINESE_TWO_CHARACTER_QUANTIFIERS,
)

TEXT_START, TEXT_END = "^", "$"
TEN = CHINESE_PLACE_UNITS[0][1]
LARGE_UNITS = frozenset(unit for _, unit in CHINESE_PLACE_UNITS[1:])  # units before which 2 reads 两
DIGIT_RUN_LIMIT = 32  # longer runs are read in chunks of this many digits


# --- spelling one number ---------------------------------------------------------------------------


def digit_word(character: str) -> str:
    return CHINESE_DIGITS[int(character)]


def place_value_words(number: str) -> list[str]:
    """Digits and place units of an integer string, e.g. "105" -> 一 百 零 五 ("00" -> nothing)."""
    significant = number.lstrip("0")
    if len(significant) <= 1:
        had_zeros = len(significant) < len(number)
        return ([CHINESE_DIGITS[0]] if had_zeros and significant else []) + [digit_word(c) for c in significant]
    power, unit = max((p, u) for p, u in CHINESE_PLACE_UNITS if p < len(significant))
    return place_value_words(number[:-power]) + [unit] + place_value_words(significant[-power:])


def use_liang(words: list[str]) -> list[str]:
    """二 becomes 两 between "nothing or a large unit" and a large unit (两百, 一千两百, not 二十)."""
    two = CHINESE_DIGITS[2]
    result = list(words)
    for index, word in enumerate(words):
        before = words[index - 1] if index > 0 else None
        after = words[index + 1] if index + 1 < len(words) else None
        if word == two and after in LARGE_UNITS and (before is None or before in LARGE_UNITS):
            result[index] = CHINESE_TWO_BEFORE_UNIT
    return result


def tidy_number_text(text: str) -> str:
    if text.startswith(CHINESE_POINT):
        text = CHINESE_DIGITS[0] + text
    if text.startswith(CHINESE_DIGITS[1] + TEN):
        text = text[1:]
    return text


def spell_cardinal(number: str) -> str:
    """Place-value reading of "I" or "I.F": 2005 -> 两千零五, 10.5 -> 十点五, 007 -> 零七."""
    whole, point, fraction = number.partition(".")
    words = [digit_word(c) for c in whole] if len(whole) <= 1 else place_value_words(whole)
    if point:
        words += [CHINESE_POINT] + [digit_word(c) for c in fraction]
    return tidy_number_text("".join(use_liang(words)))


def spell_digits(number: str) -> str:
    """Digit-by-digit reading (years, phone numbers, long runs): 2024 -> 二零二四."""
    whole, point, fraction = number.partition(".")
    text = "".join(map(digit_word, whole))
    if point:
        text += CHINESE_POINT + "".join(map(digit_word, fraction))
    return tidy_number_text(text)


# --- rewrite categories ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rewrite:
    """One category: ``pattern``'s group "hit" is the text to replace, ``spell(match)`` its reading."""

    name: str
    pattern: re.Pattern[str]
    spell: Callable[[re.Match[str]], str]

    def apply(self, text: str) -> str:
        for match in list(self.pattern.finditer(text)):
            hit = match["hit"]
            if hit:  # an all-optional pattern may hit nothing
                text = text.replace(hit, self.spell(match), 1)
        return text


def one_of(options) -> str:
    return "(?:" + "|".join(map(re.escape, options)) + ")"


def digit_heads(heads) -> str:
    return "(?:" + "|".join(head.replace("x", r"\d") for head in heads) + ")"


NUMBER = r"\d+(?:\.\d+)?"
MODIFIER = f"[{CHINESE_NUMBER_MODIFIERS}]?"
MAGNITUDE = one_of(CHINESE_MONEY_MAGNITUDES)
MONEY_UNIT = f"(?:{MAGNITUDE}|{MAGNITUDE}?{one_of(CHINESE_MONEY_WORDS)}|{one_of(CHINESE_MONEY_SUBUNITS)})"
QUANTIFIER = f"(?:[{CHINESE_QUANTIFIERS}]|{one_of(CHINESE_TWO_CHARACTER_QUANTIFIERS)})"

YEAR = r"(?P<year>[089]\d|(?:19|20)\d\d)年"
MONTH_DAY = r"(?P<month>\d{1,2})月(?:(?P<day>\d{1,2})(?P<day_word>[日号]))?"
DATE_PATTERN = rf"\D+(?P<hit>(?:{YEAR})?(?:{MONTH_DAY})?)"
MONEY_PATTERN = rf"\D+(?P<hit>{NUMBER}{MODIFIER}{MONEY_UNIT}(?:\d{MONEY_UNIT}?)?)"
MOBILE_PATTERN = rf"\D(?P<hit>(?:\+?86 ?)?1{digit_heads(CHINESE_MOBILE_HEADS)}\d{{8}})\D"
LANDLINE_PATTERN = rf"\D(?P<hit>(?:0{digit_heads(CHINESE_LANDLINE_AREAS)}-?)?[1-9]\d{{6,7}})\D"


def spell_date(match: re.Match[str]) -> str:
    text = ""
    if match["year"]:
        text += spell_digits(match["year"]) + "年"
    if match["month"]:
        text += spell_cardinal(match["month"]) + "月"
    if match["day"]:
        text += spell_cardinal(match["day"]) + match["day_word"]
    return text


def spell_money(match: re.Match[str]) -> str:
    text = match["hit"]
    for number in re.findall(NUMBER, text):
        text = text.replace(number, spell_cardinal(number))
    return text


def spell_mobile(match: re.Match[str]) -> str:
    return "".join(spell_digits(part) for part in match["hit"].strip("+").split())


def spell_landline(match: re.Match[str]) -> str:
    return "".join(spell_digits(part) for part in match["hit"].split("-"))


def spell_fraction(match: re.Match[str]) -> str:
    return spell_cardinal(match["denominator"]) + CHINESE_FRACTION_JOINER + spell_cardinal(match["numerator"])


def spell_percentage(match: re.Match[str]) -> str:
    return CHINESE_PERCENT_PREFIX + spell_cardinal(match["number"])


def restore_latin_two(match: re.Match[str]) -> str:
    return match["hit"].replace(CHINESE_DIGITS[2], "2")


REWRITES = (
    Rewrite("date", re.compile(DATE_PATTERN), spell_date),
    Rewrite("money", re.compile(MONEY_PATTERN), spell_money),
    Rewrite("mobile", re.compile(MOBILE_PATTERN), spell_mobile),
    Rewrite("landline", re.compile(LANDLINE_PATTERN), spell_landline),
    Rewrite("fraction", re.compile(r"(?P<hit>(?P<numerator>\d+)/(?P<denominator>\d+))"), spell_fraction),
    Rewrite("percentage", re.compile(rf"(?P<hit>(?P<number>{NUMBER})[%％])"), spell_percentage),
    Rewrite("counted", re.compile(rf"(?P<hit>{NUMBER}){MODIFIER}{QUANTIFIER}"), lambda m: spell_cardinal(m["hit"])),
    Rewrite("digit run", re.compile(rf"(?P<hit>\d{{4,{DIGIT_RUN_LIMIT}}})"), lambda m: spell_digits(m["hit"])),
    Rewrite("number", re.compile(rf"(?P<hit>{NUMBER})"), lambda m: spell_cardinal(m["hit"])),
    Rewrite("latin 2 latin", re.compile(r"(?P<hit>[A-Za-z]+二[A-Za-z]+)"), restore_latin_two),
)
COMMA_FOR_PUNCTUATION = str.maketrans(dict.fromkeys(CHINESE_PUNCTUATION, ","))


def normalize_chinese_text(text: str) -> str:
    """Spell the numbers of a (lower-cased) Chinese lyric line and turn its punctuation into commas."""
    text = TEXT_START + text + TEXT_END
    for rewrite in REWRITES:
        text = rewrite.apply(text)
    text = text.lstrip(TEXT_START).rstrip(TEXT_END)
    return text.translate(COMMA_FOR_PUNCTUATION)
