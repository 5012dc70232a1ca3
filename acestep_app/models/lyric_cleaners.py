"""Per-language text cleaning of one lyric line before BPE (spec §3.3).

The XTTS-style "multilingual cleaner": lowercase, spell out numbers (num2words, or Chinese numerals
for zh), expand a few abbreviations and symbols, collapse whitespace; then romanise zh (pinyin with
tone numbers), ko (academic Hangul romanisation) and ja (cutlet romaji). Language libraries are
imported on first use only.
"""

from __future__ import annotations

import re
import threading
from functools import cache

MULTILINGUAL_LANGUAGES = frozenset(
    {"ar", "cs", "de", "en", "es", "fr", "hu", "it", "nl", "pl", "pt", "ru", "tr", "zh", "ko"}
)


def _abbreviation_rules(pairs: list[tuple[str, str]], word_end: str = r"\.") -> list[tuple[re.Pattern, str]]:
    return [(re.compile(rf"\b{short}{word_end}", re.IGNORECASE), long) for short, long in pairs]


ABBREVIATIONS: dict[str, list[tuple[re.Pattern, str]]] = {
    "en": _abbreviation_rules(
        [
            ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"),
            ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"),
            ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"),
            ("esq", "esquire"), ("ltd", "limited"), ("col", "colonel"), ("ft", "fort"),
        ]
    ),  # fmt: skip
    "es": _abbreviation_rules(
        [("sra", "señora"), ("sr", "señor"), ("dr", "doctor"), ("dra", "doctora"), ("st", "santo"),
         ("co", "compañía"), ("jr", "junior"), ("ltd", "limitada")]
    ),  # fmt: skip
    "fr": _abbreviation_rules(
        [("mme", "madame"), ("mr", "monsieur"), ("dr", "docteur"), ("st", "saint"), ("co", "compagnie"),
         ("jr", "junior"), ("ltd", "limitée")]
    ),  # fmt: skip
    "de": _abbreviation_rules([("fr", "frau"), ("dr", "doktor"), ("st", "sankt"), ("co", "firma"), ("jr", "junior")]),
    "pt": _abbreviation_rules(
        [("sra", "senhora"), ("sr", "senhor"), ("dr", "doutor"), ("dra", "doutora"), ("st", "santo"),
         ("co", "companhia"), ("jr", "júnior"), ("ltd", "limitada")]
    ),  # fmt: skip
    "it": _abbreviation_rules(
        [("sig", "signore"), ("dr", "dottore"), ("st", "santo"), ("co", "compagnia"), ("jr", "junior"),
         ("ltd", "limitata")]
    ),  # fmt: skip
    "pl": _abbreviation_rules([("p", "pani"), ("m", "pan"), ("dr", "doktor"), ("sw", "święty"), ("jr", "junior")]),
    "ar": [],
    "zh": [],
    "cs": _abbreviation_rules([("dr", "doktor"), ("ing", "inženýr"), ("p", "pan")]),
    "ru": _abbreviation_rules([("г-жа", "госпожа"), ("г-н", "господин"), ("д-р", "доктор")], word_end=r"\b"),
    "nl": _abbreviation_rules([("dhr", "de heer"), ("mevr", "mevrouw"), ("dr", "dokter"), ("jhr", "jonkheer")]),
    "tr": _abbreviation_rules([("b", "bay"), ("byk", "büyük"), ("dr", "doktor")]),
    "hu": _abbreviation_rules([("dr", "doktor"), ("b", "bácsi"), ("nőv", "nővér")]),
    "ko": [],
}

SYMBOL_CHARS = ("&", "@", "%", "#", "$", "£", "°")
SYMBOL_WORDS: dict[str, tuple[str, ...]] = {
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
}

ORDINAL_PATTERNS: dict[str, re.Pattern] = {
    lang: re.compile(pattern)
    for lang, pattern in {
        "en": r"([0-9]+)(st|nd|rd|th)",
        "es": r"([0-9]+)(º|ª|er|o|a|os|as)",
        "fr": r"([0-9]+)(º|ª|er|re|e|ème)",
        "de": r"([0-9]+)(st|nd|rd|th|º|ª|\.(?=\s|$))",
        "pt": r"([0-9]+)(º|ª|o|a|os|as)",
        "it": r"([0-9]+)(º|°|ª|o|a|i|e)",
        "pl": r"([0-9]+)(º|ª|st|nd|rd|th)",
        "ar": r"([0-9]+)(ون|ين|ث|ر|ى)",
        "cs": r"([0-9]+)\.(?=\s|$)",
        "ru": r"([0-9]+)(-й|-я|-е|-ое|-ье|-го)",
        "nl": r"([0-9]+)(de|ste|e)",
        "tr": r"([0-9]+)(\.|inci|nci|uncu|üncü|\.)",
        "hu": r"([0-9]+)(\.|adik|edik|odik|edik|ödik|ödike|ik)",
        "ko": r"([0-9]+)(번째|번|차|째)",
    }.items()
}
INTEGER_RE = re.compile(r"[0-9]+")
CURRENCY_PATTERNS = (  # applied in this order
    ("GBP", re.compile(r"((£[0-9\.\,]*[0-9]+)|([0-9\.\,]*[0-9]+£))")),
    ("USD", re.compile(r"((\$[0-9\.\,]*[0-9]+)|([0-9\.\,]*[0-9]+\$))")),
    ("EUR", re.compile(r"(([0-9\.\,]*[0-9]+€)|((€[0-9\.\,]*[0-9]+)))")),
)
# num2words writes "<units>, <cents>"-style amounts; this is the separator dropped for whole amounts.
CURRENCY_CENTS_SEPARATOR = {"es": " con ", "fr": " et ", "de": " und ", "pt": " e ", "it": " e "}
COMMA_GROUPED_NUMBER_RE = re.compile(r"\b\d{1,3}(,\d{3})*(\.\d+)?\b")
# The unescaped "." (any character) is the reference's behaviour, kept for parity.
DOT_GROUPED_NUMBER_RE = re.compile(r"\b\d{1,3}(.\d{3})*(\,\d+)?\b")
DECIMAL_RE = re.compile(r"([0-9]+[.,][0-9]+)")
WHITESPACE_RE = re.compile(r"\s+")


def _num2words_lang(lang: str) -> str:
    return "cz" if lang == "cs" else lang


def _num2words(*args, **kwargs) -> str:
    from num2words import num2words

    return num2words(*args, **kwargs)


def _spell_currency(amount_text: str, lang: str, currency: str) -> str:
    amount = float(re.sub(r"[^\d.]", "", amount_text.replace(",", ".")))
    words = _num2words(amount, to="currency", currency=currency, lang=_num2words_lang(lang))
    if amount.is_integer():
        cut = words.rfind(CURRENCY_CENTS_SEPARATOR.get(lang, ", "))
        if cut != -1:
            words = words[:cut]
    return words


def _expand_numbers(text: str, lang: str) -> str:
    if lang == "zh":
        from acestep_app.models.zh_text_norm import normalize_chinese_text

        return normalize_chinese_text(text)
    grouped = COMMA_GROUPED_NUMBER_RE if lang in ("en", "ru") else DOT_GROUPED_NUMBER_RE
    separator = "," if lang in ("en", "ru") else "."
    text = grouped.sub(lambda m: m.group(0).replace(separator, ""), text)
    try:
        for currency, pattern in CURRENCY_PATTERNS:
            text = pattern.sub(lambda m: _spell_currency(m.group(0), lang, currency), text)
    except Exception:  # the reference keeps whatever currencies were already spelled out
        pass
    n2w_lang = _num2words_lang(lang)
    if lang != "tr":
        text = DECIMAL_RE.sub(lambda m: _num2words(float(m.group(1).replace(",", ".")), lang=n2w_lang), text)
    text = ORDINAL_PATTERNS[lang].sub(lambda m: _num2words(int(m.group(1)), ordinal=True, lang=n2w_lang), text)
    return INTEGER_RE.sub(lambda m: _num2words(int(m.group(0)), lang=n2w_lang), text)


def _expand_abbreviations(text: str, lang: str) -> str:
    for pattern, replacement in ABBREVIATIONS[lang]:
        text = pattern.sub(replacement, text)
    return text


def _expand_symbols(text: str, lang: str) -> str:
    for symbol, word in zip(SYMBOL_CHARS, SYMBOL_WORDS[lang]):
        text = text.replace(symbol, f" {word} ").replace("  ", " ")
    return text.strip()


def collapse_whitespace(text: str) -> str:
    return WHITESPACE_RE.sub(" ", text)


def multilingual_clean(text: str, lang: str) -> str:
    text = text.replace('"', "")
    if lang == "tr":
        text = text.replace("İ", "i").replace("Ö", "ö").replace("Ü", "ü")
    text = text.lower()
    # Each stage is best-effort: a failing stage leaves the text as it was before it.
    for stage in (_expand_numbers, _expand_abbreviations, _expand_symbols):
        try:
            text = stage(text, lang)
        except Exception:
            pass
    return collapse_whitespace(text)


def chinese_to_pinyin(text: str) -> str:
    import pypinyin

    syllables = pypinyin.pinyin(text, style=pypinyin.Style.TONE3, heteronym=False, neutral_tone_with_five=True)
    return "".join(options[0] for options in syllables)


@cache
def _hangul_transliterator():
    from hangul_romanize import Transliter
    from hangul_romanize.rule import academic

    return Transliter(academic)


def korean_to_latin(text: str) -> str:
    return _hangul_transliterator().translit(text)


_cutlet_lock = threading.Lock()


@cache
def _cutlet():
    import cutlet

    return cutlet.Cutlet()


def japanese_to_romaji(text: str) -> str:
    with _cutlet_lock:  # Cutlet/MeCab objects are not documented as thread-safe
        return _cutlet().romaji(text).lower()


def clean_line(text: str, lang: str) -> str:
    """Cleaned, romanised text of one line for a base language code (no region)."""
    if lang in MULTILINGUAL_LANGUAGES:
        text = multilingual_clean(text, lang)
        if lang == "zh":
            return chinese_to_pinyin(text)
        if lang == "ko":
            return korean_to_latin(text)
        return text
    if lang == "ja":
        return japanese_to_romaji(text)
    if lang == "hi":
        return collapse_whitespace(text.lower())
    raise NotImplementedError(f"no lyric cleaner for language {lang!r}")
