"""Chinese number normalisation for the lyric tokenizer's ``zh`` cleaner.

Restates the behaviour of the text normaliser the reference vendors from Coqui XTTS
(``zh_num2words.TextNorm()`` with default options): dates, money, phone numbers, fractions,
percentages, counted and bare numbers become Chinese numerals ("mid" numbering system,
simplified characters), then every punctuation mark becomes an ASCII comma.

Rewrites are applied in the reference's peculiar way -- collect all matches of a rule first,
then replace the *first occurrence* of each matched string -- because token-id parity depends
on it. Errors propagate; the caller keeps the un-normalised text when this raises.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

DIGIT_CHARS = "零一二三四五六七八九"
LIANG = "两"
POINT_CHAR = "点"
# (power of ten, character) from largest to smallest; "mid" system: 亿 = 10^8, 兆 = 10^12, ...
UNIT_CHARS = tuple((4 * (i + 2), c) for i, c in enumerate("亿兆京垓秭穰沟涧正载"))[::-1] + (
    (4, "万"),
    (3, "千"),
    (2, "百"),
    (1, "十"),
)
UNIT_BY_POWER = dict(UNIT_CHARS)

CURRENCY_UNIT = r"((亿|千万|百万|万|千|百)|(亿|千万|百万|万|千|百|)元|(亿|千万|百万|万|千|百|)块|角|毛|分)"
SINGLE_CHAR_QUANTIFIERS = (
    "匹张座回场尾条个首阙阵网炮顶丘棵只支袭辆挑担颗壳窠曲墙群腔砣客贯扎捆刀令打手罗坡山岭江溪钟队单双对出口头脚"
    "板跳枝件贴针线管名位身堂课本页家户层丝毫厘分钱两斤铢石钧锱忽寸尺丈里寻常铺程撮勺合升斗盘碗碟叠桶笼盆盒杯斛锅"
    "簋篮罐瓶壶卮盏箩箱煲啖袋钵年月日季刻时周天秒旬纪岁世更夜春夏秋冬代伏辈丸泡粒幢堆根道面片块"
)
QUANTIFIER = rf"(?:[{SINGLE_CHAR_QUANTIFIERS}]|[千微][克米])"

DATE_RE = re.compile(r"\D+((([089]\d|(19|20)\d{2})年)?(\d{1,2}月(\d{1,2}[日号])?)?)")
MONEY_RE = re.compile(r"\D+((\d+(\.\d+)?)[多余几]?" + CURRENCY_UNIT + r"(\d" + CURRENCY_UNIT + r"?)?)")
MOBILE_RE = re.compile(r"\D((\+?86 ?)?1([38]\d|5[0-35-9]|7[678]|9[89])\d{8})\D")
LANDLINE_RE = re.compile(r"\D((0(10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7})\D")
FRACTION_RE = re.compile(r"(\d+/\d+)")
PERCENT_RE = re.compile(r"(\d+(\.\d+)?%)")
COUNTED_RE = re.compile(r"(\d+(\.\d+)?)[多余几]?" + QUANTIFIER)
DIGIT_RUN_RE = re.compile(r"(\d{4,32})")
NUMBER_RE = re.compile(r"(\d+(\.\d+)?)")
LATIN_TWO_LATIN_RE = re.compile(r"(([a-zA-Z]+)二([a-zA-Z]+))")

CHINESE_PUNCTUATION = (
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃《》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿"
    "–—‘’‛“”„‟…‧﹏·〈〉-"
)
PUNCTUATION = CHINESE_PUNCTUATION + string.punctuation
TO_COMMAS = str.maketrans(PUNCTUATION, "," * len(PUNCTUATION))


@dataclass(frozen=True)
class _Digit:
    value: int
    text: str


@dataclass(frozen=True)
class _Unit:
    power: int


@dataclass(frozen=True)
class _Point:
    pass


def _digit(value: int) -> _Digit:
    return _Digit(value, DIGIT_CHARS[value])


def _with_units(digits: str) -> list:
    """Spell a digit string with place units, e.g. "2005" -> 二 千 零 五 (as symbols)."""
    significant = digits.lstrip("0")
    if not significant:
        return []
    if len(significant) == 1:
        zero = [_digit(0)] if len(significant) != len(digits) else []
        return zero + [_digit(int(significant))]
    power = next(p for p, _ in UNIT_CHARS if p < len(significant))
    return _with_units(digits[:-power]) + [_Unit(power)] + _with_units(significant[-power:])


def _use_liang(symbols: list) -> list:
    """二 before a unit other than 十, and not right after 十, reads 两 (两千, 两万, but 二十)."""
    result = list(symbols)
    for i, symbol in enumerate(result):
        if not (isinstance(symbol, _Digit) and symbol.value == 2):
            continue
        after = result[i + 1] if i + 1 < len(result) else None
        before = result[i - 1] if i > 0 else None
        if not isinstance(after, _Unit) or not (before is None or isinstance(before, _Unit)):
            continue
        if after.power != 1 and (before is None or before.power != 1):
            result[i] = _Digit(2, LIANG)
    return result


def _render(symbol) -> str:
    if isinstance(symbol, _Digit):
        return symbol.text
    if isinstance(symbol, _Unit):
        return UNIT_BY_POWER[symbol.power]
    return POINT_CHAR


def spell_number(number: str, liang: bool = True, use_units: bool = True) -> str:
    """Chinese numeral for a decimal string ("12.5" -> 十二点五); digit by digit when use_units is False."""
    parts = number.split(".")
    if len(parts) > 2:
        raise ValueError(f"more than one decimal point in {number!r}")
    integer, fraction = parts[0], parts[1] if len(parts) == 2 else ""
    if use_units and len(integer) > 1:
        symbols = _with_units(integer)
    else:
        symbols = [_digit(int(c)) for c in integer]
    if fraction:
        symbols += [_Point()] + [_digit(int(c)) for c in fraction]
    if liang:
        symbols = _use_liang(symbols)
    text = "".join(_render(s) for s in symbols)
    if text.startswith(POINT_CHAR):
        return DIGIT_CHARS[0] + text
    if len(text) >= 2 and text[0] == "一" and text[1] == "十":
        text = text[1:]
    return text


def spell_digits(digits: str) -> str:
    return spell_number(digits, liang=False, use_units=False)


def _spell_date(date: str) -> str:
    """"2024年5月1日" -> 二零二四年五月一日 (year digit by digit, month/day as numbers)."""
    year_and_rest = date.strip().split("年", 1)
    if len(year_and_rest) == 2:
        year, rest = spell_digits(year_and_rest[0]) + "年", year_and_rest[1]
    else:
        year, rest = "", date
    month = day = ""
    if rest:
        month_and_day = rest.strip().split("月", 1)
        if len(month_and_day) == 2:
            month, day = spell_number(month_and_day[0]) + "月", month_and_day[1]
        else:
            day = date
        if day:
            day = spell_number(day[:-1]) + day[-1]
    return year + month + day


def _spell_money(money: str) -> str:
    for match in NUMBER_RE.findall(money):
        money = money.replace(match[0], spell_number(match[0]))
    return money


def _spell_mobile(phone: str) -> str:
    return "".join(spell_digits(part) for part in phone.strip("+").split())


def _spell_landline(phone: str) -> str:
    return "".join(spell_digits(part) for part in phone.split("-"))


def _spell_fraction(fraction: str) -> str:
    numerator, denominator = fraction.split("/")
    return spell_number(denominator) + "分之" + spell_number(numerator)


def _spell_percentage(percentage: str) -> str:
    return "百分之" + spell_number(percentage.strip().strip("%"))


def _rewrite_first_occurrences(text: str, pattern: re.Pattern, spell) -> str:
    for found in [m.group(1) for m in pattern.finditer(text)]:
        text = text.replace(found, spell(found), 1)
    return text


def normalize_numbers(text: str) -> str:
    text = "^" + text + "$"
    text = _rewrite_first_occurrences(text, DATE_RE, _spell_date)
    text = _rewrite_first_occurrences(text, MONEY_RE, _spell_money)
    text = _rewrite_first_occurrences(text, MOBILE_RE, _spell_mobile)
    text = _rewrite_first_occurrences(text, LANDLINE_RE, _spell_landline)
    text = _rewrite_first_occurrences(text, FRACTION_RE, _spell_fraction)
    text = text.replace("％", "%")
    text = _rewrite_first_occurrences(text, PERCENT_RE, _spell_percentage)
    text = _rewrite_first_occurrences(text, COUNTED_RE, spell_number)
    text = _rewrite_first_occurrences(text, DIGIT_RUN_RE, spell_digits)
    text = _rewrite_first_occurrences(text, NUMBER_RE, spell_number)
    for whole, left, right in [m.groups() for m in LATIN_TWO_LATIN_RE.finditer(text)]:
        text = text.replace(whole, left + "2" + right, 1)
    return text.lstrip("^").rstrip("$")


def normalize_chinese_text(text: str) -> str:
    """Numbers to Chinese numerals, then all punctuation to ","."""
    return normalize_numbers(text).translate(TO_COMMAS)
