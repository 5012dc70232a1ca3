# This Source Code Form is subject to the terms of the Mozilla Public License, v. 2.0. If a copy of
# the MPL was not distributed with this file, You can obtain one at https://mozilla.org/MPL/2.0/.
#
# This file, and only this file of acestep-app, is under MPL-2.0 (the rest of the project is
# Apache-2.0). It holds data only: the per-language tables of the lyric cleaner that are derived from
# Coqui TTS's XTTS tokenizer (coqui-ai/TTS, TTS/tts/layers/xtts/tokenizer.py, MPL-2.0), as carried
# by ACE-Step (acestep/models/lyrics_utils/lyric_tokenizer.py, commit d612523f50e2). They are
# restated from the behavioural spec shared/spec/lyric-normalisation.md §7.1-7.4, because exact
# lyric-token parity with the reference model needs the same words, suffixes and patterns.
#
# Tables and their origin:
#   ABBREVIATIONS      non-English abbreviation expansions (Coqui XTTS). English: see
#                      normalisation_tables.ENGLISH_ABBREVIATIONS (keithito/tacotron).
#   SYMBOL_WORDS       words for & @ % # $ £ ° per language (Coqui XTTS).
#   ORDINAL_SUFFIXES   ordinal suffix alternatives per language (Coqui XTTS).
#   CENTS_SEPARATORS   where num2words' "... and N cents" part starts, per language (Coqui XTTS).
#   NUM2WORDS_CODES    language codes handed to num2words that differ from ours (Coqui XTTS).
#   LANGUAGES_WITHOUT_DECIMALS  languages whose number stage has no decimal step (Coqui XTTS).
#   *_PATTERN          number-stage regular expressions: digit grouping and currency amounts
#                      (Coqui XTTS), including the reference's unescaped-dot grouping pattern.
"""Per-language lyric cleaner data (MPL-2.0; see the header). Data only, no logic."""

from __future__ import annotations

# Applied in the listed order: "<word boundary><abbreviation>." (Russian: no dot, word boundary after).
ABBREVIATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "es": (("sra", "señora"), ("sr", "señor"), ("dr", "doctor"), ("dra", "doctora"), ("st", "santo"),
           ("co", "compañía"), ("jr", "junior"), ("ltd", "limitada")),
    "fr": (("mme", "madame"), ("mr", "monsieur"), ("dr", "docteur"), ("st", "saint"), ("co", "compagnie"),
           ("jr", "junior"), ("ltd", "limitée")),
    "de": (("fr", "frau"), ("dr", "doktor"), ("st", "sankt"), ("co", "firma"), ("jr", "junior")),
    "pt": (("sra", "senhora"), ("sr", "senhor"), ("dr", "doutor"), ("dra", "doutora"), ("st", "santo"),
           ("co", "companhia"), ("jr", "júnior"), ("ltd", "limitada")),
    "it": (("sig", "signore"), ("dr", "dottore"), ("st", "santo"), ("co", "compagnia"), ("jr", "junior"),
           ("ltd", "limitata")),
    "pl": (("p", "pani"), ("m", "pan"), ("dr", "doktor"), ("sw", "święty"), ("jr", "junior")),
    "cs": (("dr", "doktor"), ("ing", "inženýr"), ("p", "pan")),
    "ru": (("г-жа", "госпожа"), ("г-н", "господин"), ("д-р", "доктор")),
    "nl": (("dhr", "de heer"), ("mevr", "mevrouw"), ("dr", "dokter"), ("jhr", "jonkheer")),
    "tr": (("b", "bay"), ("byk", "büyük"), ("dr", "doktor")),
    "hu": (("dr", "doktor"), ("b", "bácsi"), ("nőv", "nővér")),
}  # fmt: skip
ABBREVIATIONS_WITHOUT_DOT = frozenset({"ru"})

SYMBOLS = ("&", "@", "%", "#", "$", "£", "°")  # replacement order
SYMBOL_WORDS: dict[str, tuple[str, ...]] = {  # one word per entry of SYMBOLS
    "en": ("and", "at", "percent", "hash", "dollar", "pound", "degree"),
    "es": ("y", "arroba", "por ciento", "numeral", "dolar", "libra", "grados"),
    "fr": ("et", "arobase", "pour cent", "dièse", "dollar", "livre", "degrés"),
    "de": ("und", "at", "prozent", "raute", "dollar", "pfund", "grad"),
    "pt": ("e", "arroba", "por cento", "cardinal", "dólar", "libra", "graus"),
    "it": ("e", "chiocciola", "per cento", "cancelletto", "dollaro", "sterlina", "gradi"),
    "pl": ("i", "małpa", "procent", "krzyżyk", "dolar", "funt", "stopnie"),
    "ar": ("و", "على", "في المئة", "رقم", "دولار", "جنيه", "درجة"),
    "zh": ("和", "在", "百分之", "号", "美元", "英镑", "度"),
    "cs": ("a", "na", "procento", "křížek", "dolar", "libra", "stupně"),
    "ru": ("и", "собака", "процентов", "номер", "доллар", "фунт", "градус"),
    "nl": ("en", "bij", "procent", "hekje", "dollar", "pond", "graden"),
    "tr": ("ve", "at", "yüzde", "diyez", "dolar", "sterlin", "derece"),
    "hu": ("és", "kukac", "százalék", "kettőskereszt", "dollár", "font", "fok"),
    "ko": ("그리고", "에", "퍼센트", "번호", "달러", "파운드", "도"),
}  # fmt: skip

# Regex alternatives, tried in this order right after a run of ASCII digits (no boundary after them).
ORDINAL_SUFFIXES: dict[str, tuple[str, ...]] = {
    "en": ("st", "nd", "rd", "th"),
    "es": ("º", "ª", "er", "o", "a", "os", "as"),
    "fr": ("º", "ª", "er", "re", "e", "ème"),
    "de": ("st", "nd", "rd", "th", "º", "ª", r"\.(?=\s|$)"),
    "pt": ("º", "ª", "o", "a", "os", "as"),
    "it": ("º", "°", "ª", "o", "a", "i", "e"),
    "pl": ("º", "ª", "st", "nd", "rd", "th"),
    "ar": ("ون", "ين", "ث", "ر", "ى"),
    "cs": (r"\.(?=\s|$)",),
    "ru": ("-й", "-я", "-е", "-ое", "-ье", "-го"),
    "nl": ("de", "ste", "e"),
    "tr": (r"\.", "inci", "nci", "uncu", "üncü"),
    "hu": (r"\.", "adik", "edik", "odik", "ödik", "ödike", "ik"),
    "ko": ("번째", "번", "차", "째"),
}  # fmt: skip

DEFAULT_CENTS_SEPARATOR = ", "
CENTS_SEPARATORS = {"es": " con ", "fr": " et ", "de": " und ", "pt": " e ", "it": " e "}

LANGUAGES_WITHOUT_DECIMALS = frozenset({"tr"})  # no decimal step: "1.5" is an ordinal, "12,5" two numbers
NUM2WORDS_CODES = {"cs": "cz"}  # num2words 0.5.14 knows no "cz": Czech number words always fail

COMMA_GROUPED_LANGUAGES = frozenset({"en", "ru"})
COMMA_GROUPED_PATTERN = r"\b\d{1,3}(,\d{3})*(\.\d+)?\b"  # its commas are deleted
DOT_GROUPED_PATTERN = r"\b\d{1,3}(.\d{3})*(\,\d+)?\b"  # its literal dots are deleted; "." is a wildcard

# (num2words currency code, sign); applied in this order, amounts of ASCII digits before or after the sign.
CURRENCY_SIGNS = (("GBP", "£"), ("USD", "$"), ("EUR", "€"))
CURRENCY_AMOUNT = r"[0-9.,]*[0-9]+"
SIGN_AFTER_AMOUNT_FIRST = frozenset({"EUR"})  # order of the two alternatives in the pattern
