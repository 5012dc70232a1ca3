"""Per-line lyric cleaning and romanisation, before BPE encoding (spec: lyric-normalisation.md §1-§4).

Fifteen languages go through the same five stages: prepare (quotes, case), numbers (num2words, or
the Chinese normaliser for zh), abbreviations, symbols, whitespace. The numbers, abbreviations and
symbols stages are each isolated: one that raises leaves the text as it found it, as the reference
does, and the trace records why. Chinese and Korean are then romanised; Japanese is only romanised
and Hindi only lower-cased. The reference's quirks (failing num2words languages and currencies, the
wildcard dot in digit grouping, the pt cents cut) are reproduced on purpose: the model's lyric ids
depend on them. Tables: ``normalisation_tables`` and ``normalisation_tables_mpl``.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass, field

from num2words import num2words

from acestep_app.acestep_v1.lyrics.chinese_numbers import normalize_chinese_text
from acestep_app.acestep_v1.lyrics.tables import ENGLISH_ABBREVIATIONS
from acestep_app.acestep_v1.lyrics.tables_mpl import (
    ABBREVIATIONS,
    ABBREVIATIONS_WITHOUT_DOT,
    CENTS_SEPARATORS,
    COMMA_GROUPED_LANGUAGES,
    COMMA_GROUPED_PATTERN,
    CURRENCY_AMOUNT,
    CURRENCY_SIGNS,
    DEFAULT_CENTS_SEPARATOR,
    DOT_GROUPED_PATTERN,
    LANGUAGES_WITHOUT_DECIMALS,
    NUM2WORDS_CODES,
    ORDINAL_SUFFIXES,
    SIGN_AFTER_AMOUNT_FIRST,
    SYMBOL_WORDS,
    SYMBOLS,
)

CLEANED_LANGUAGES = frozenset(SYMBOL_WORDS)  # the languages of the five-stage cleaner
TURKISH_CAPITALS = str.maketrans({"İ": "i", "Ö": "ö", "Ü": "ü"})
DECIMAL = re.compile(r"[0-9]+[.,][0-9]+")
INTEGER = re.compile(r"[0-9]+")
WHITESPACE = re.compile(r"\s+")


# --- stage A: prepare ------------------------------------------------------------------------------


def prepare(text: str, lang: str) -> str:
    text = text.replace('"', "")
    if lang == "tr":
        text = text.translate(TURKISH_CAPITALS)
    return text.lower()


# --- stage B: numbers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumberRules:
    lang: str
    grouping: re.Pattern[str]
    group_separator: str
    currencies: tuple[tuple[str, re.Pattern[str]], ...]
    ordinal: re.Pattern[str]

    def words(self, number: int | float, **options) -> str:
        return num2words(number, lang=NUM2WORDS_CODES.get(self.lang, self.lang), **options)


def currency_pattern(code: str, sign: str) -> re.Pattern[str]:
    sign = re.escape(sign)
    forms = [sign + CURRENCY_AMOUNT, CURRENCY_AMOUNT + sign]
    if code in SIGN_AFTER_AMOUNT_FIRST:
        forms.reverse()
    return re.compile("|".join(forms))


@functools.cache
def number_rules(lang: str) -> NumberRules:
    comma_grouped = lang in COMMA_GROUPED_LANGUAGES
    return NumberRules(
        lang=lang,
        grouping=re.compile(COMMA_GROUPED_PATTERN if comma_grouped else DOT_GROUPED_PATTERN),
        group_separator="," if comma_grouped else ".",
        currencies=tuple((code, currency_pattern(code, sign)) for code, sign in CURRENCY_SIGNS),
        ordinal=re.compile(f"(?P<digits>[0-9]+)(?:{'|'.join(ORDINAL_SUFFIXES[lang])})"),
    )


def currency_words(amount_text: str, code: str, rules: NumberRules) -> str:
    amount = float("".join(c for c in amount_text.replace(",", ".") if c.isdigit() or c == "."))
    words = rules.words(amount, to="currency", currency=code)
    separator = CENTS_SEPARATORS.get(rules.lang, DEFAULT_CENTS_SEPARATOR)
    if amount.is_integer() and separator in words:
        words = words[: words.rindex(separator)]  # drops "..., zero cents"
    return words


def spell_currencies(text: str, rules: NumberRules) -> str:
    try:
        for code, pattern in rules.currencies:
            text = pattern.sub(lambda match: currency_words(match[0], code, rules), text)
    except Exception:  # reference behaviour: amounts of this and later currencies stay as written
        pass
    return text


def spell_numbers(text: str, lang: str) -> str:
    """Digits to words with num2words: groups, currencies, decimals, ordinals, then integers."""
    if lang == "zh":
        return normalize_chinese_text(text)
    rules = number_rules(lang)
    text = rules.grouping.sub(lambda match: match[0].replace(rules.group_separator, ""), text)
    text = spell_currencies(text, rules)
    if lang not in LANGUAGES_WITHOUT_DECIMALS:
        text = DECIMAL.sub(lambda match: rules.words(float(match[0].replace(",", "."))), text)
    text = rules.ordinal.sub(lambda match: rules.words(int(match["digits"]), ordinal=True), text)
    return INTEGER.sub(lambda match: rules.words(int(match[0])), text)


# --- stage C: abbreviations ------------------------------------------------------------------------


@functools.cache
def abbreviation_rules(lang: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    table = ENGLISH_ABBREVIATIONS if lang == "en" else ABBREVIATIONS.get(lang, ())
    ending = r"\b" if lang in ABBREVIATIONS_WITHOUT_DOT else r"\."
    return tuple((re.compile(rf"\b{re.escape(short)}{ending}", re.IGNORECASE), long) for short, long in table)


def expand_abbreviations(text: str, lang: str) -> str:
    for pattern, expansion in abbreviation_rules(lang):
        text = pattern.sub(lambda _: expansion, text)
    return text


# --- stage D: symbols, stage E: whitespace ---------------------------------------------------------


def expand_symbols(text: str, lang: str) -> str:
    for symbol, word in zip(SYMBOLS, SYMBOL_WORDS[lang]):
        text = text.replace(symbol, f" {word} ").replace("  ", " ")
    return text.strip()


def collapse_whitespace(text: str) -> str:
    return WHITESPACE.sub(" ", text)


# --- the cleaner -----------------------------------------------------------------------------------

ISOLATED_STAGES = (("numbers", spell_numbers), ("abbreviations", expand_abbreviations), ("symbols", expand_symbols))


@dataclass
class CleanerTrace:
    """Text after each stage of the multilingual cleaner; ``errors`` maps a stage that raised to why."""

    prepared: str = ""
    numbers: str = ""
    abbreviations: str = ""
    symbols: str = ""
    cleaned: str = ""
    errors: dict[str, str] = field(default_factory=dict)


def describe_error(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def trace_multilingual_clean(text: str, lang: str) -> CleanerTrace:
    trace = CleanerTrace(prepared=prepare(text, lang))
    text = trace.prepared
    for name, stage in ISOLATED_STAGES:
        try:
            text = stage(text, lang)
        except Exception as error:  # the reference ignores a failing stage and goes on
            trace.errors[name] = describe_error(error)
        setattr(trace, name, text)
    trace.cleaned = collapse_whitespace(text)
    return trace


def multilingual_clean(text: str, lang: str) -> str:
    return trace_multilingual_clean(text, lang).cleaned


# --- romanisation (libraries load on first use; one shared romaniser each, used under a lock) -----

_romaniser_lock = threading.Lock()


def to_pinyin(text: str) -> str:
    from pypinyin import Style, pinyin

    readings = pinyin(text, style=Style.TONE3, heteronym=False, neutral_tone_with_five=True)
    return "".join(reading[0] for reading in readings)


@functools.cache
def hangul_romaniser():
    from hangul_romanize import Transliter
    from hangul_romanize.rule import academic

    return Transliter(academic)


@functools.cache
def romaji_converter():
    import cutlet

    return cutlet.Cutlet()


def hangul_to_latin(text: str) -> str:
    with _romaniser_lock:
        return hangul_romaniser().translit(text)


def japanese_to_romaji(text: str) -> str:
    with _romaniser_lock:
        return romaji_converter().romaji(text).lower()


def clean_line(text: str, lang: str) -> str:
    """One lyric line as the reference's ``preprocess_text`` gives it to the BPE (``lang`` may carry a region)."""
    lang = lang.split("-")[0]
    if lang == "ja":
        return japanese_to_romaji(text)
    if lang == "hi":
        return collapse_whitespace(text.lower())
    if lang not in CLEANED_LANGUAGES:
        raise NotImplementedError(f"no lyric cleaner for language {lang!r}")
    text = multilingual_clean(text, lang)
    if lang == "zh":
        return to_pinyin(text)
    if lang == "ko":
        return hangul_to_latin(text)
    return text
