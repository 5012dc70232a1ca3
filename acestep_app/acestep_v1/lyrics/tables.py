# Lyric normalisation data that is not MPL-2.0: the English abbreviation list and the Chinese number
# normaliser's tables. Restated from the behavioural spec shared/spec/lyric-normalisation.md §7.1 and
# §7.5; the per-language tables derived from Coqui TTS (MPL-2.0) are in normalisation_tables_mpl.py.
# The project NOTICE lists every source below with its licence.
#
# Tables and their origin:
#   ENGLISH_ABBREVIATIONS   keithito/tacotron text/cleaners.py (the same 18 pairs in the same order),
#                           Copyright (c) 2017 Keith Ito, MIT licence (as commonly stated; the licence
#                           file itself was not available to check). Also carried by Coqui TTS.
#   CHINESE_* number tables chn_text_norm (Joee1995/chn_text_norm, Copyright (c) 2019 Zhiyang Zhou,
#                           MIT licence) and speechio/chinese_text_normalization cn_tn.py (Jiayu Du,
#                           2019-2022; no licence file found), as carried by Coqui TTS zh_num2words.py.
#                           Digits, place units and their powers are facts of the Chinese language.
#   CHINESE_PUNCTUATION     the Zhon project (tsroten/zhon), Copyright (c) 2013 Thomas Roten, MIT
#                           licence, as credited by chn_text_norm; plus the 32 ASCII punctuation marks.
"""Lyric normalisation data (English abbreviations, Chinese number words, units and punctuation)."""

from __future__ import annotations

import string

# Applied in the listed order: "<word boundary><abbreviation>." (case-insensitive) -> expansion.
ENGLISH_ABBREVIATIONS = (
    ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"),
    ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"),
    ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"),
    ("esq", "esquire"), ("ltd", "limited"), ("col", "colonel"), ("ft", "fort"),
)  # fmt: skip

CHINESE_DIGITS = "零一二三四五六七八九"
CHINESE_TWO_BEFORE_UNIT = "两"
CHINESE_POINT = "点"
# Place units of the "mid" system (兆 = 10**12), as (power of ten, character), smallest first.
CHINESE_PLACE_UNITS = (
    (1, "十"), (2, "百"), (3, "千"), (4, "万"), (8, "亿"), (12, "兆"), (16, "京"), (20, "垓"),
    (24, "秭"), (28, "穰"), (32, "沟"), (36, "涧"), (40, "正"), (44, "载"),
)  # fmt: skip
CHINESE_FRACTION_JOINER = "分之"  # "<denominator>分之<numerator>"
CHINESE_PERCENT_PREFIX = "百分之"

# Money: a magnitude on its own, or optionally a magnitude then a currency word, or a sub-unit.
CHINESE_MONEY_MAGNITUDES = ("亿", "千万", "百万", "万", "千", "百")
CHINESE_MONEY_WORDS = ("元", "块")
CHINESE_MONEY_SUBUNITS = ("角", "毛", "分")
CHINESE_NUMBER_MODIFIERS = "多余几"  # "100多块": allowed between a number and its unit

# Measure words that make a number a counted quantity (cardinal reading), then two-character ones.
CHINESE_QUANTIFIERS = (
    "匹张座回场尾条个首阙阵网炮顶丘棵只支袭辆挑担颗壳窠曲墙群腔砣客贯扎捆刀令打手罗坡山岭江溪钟队单双对"
    "出口头脚板跳枝件贴针线管名位身堂课本页家户层丝毫厘分钱两斤铢石钧锱忽寸尺丈里寻常铺程撮勺合升斗盘碗碟"
    "叠桶笼盆盒杯斛锅簋篮罐瓶壶卮盏箩箱煲啖袋钵年月日季刻时周天秒旬纪岁世更夜春夏秋冬代伏辈丸泡粒幢堆根道"
    "面片块"
)
CHINESE_TWO_CHARACTER_QUANTIFIERS = ("千克", "微克", "千米", "微米")

# Mobile numbers: "1" + one of these two-digit heads ("x" = any digit) + 8 digits.
CHINESE_MOBILE_HEADS = ("3x", "8x", "50", "51", "52", "53", "55", "56", "57", "58", "59", "76", "77", "78", "98", "99")
# Landline area codes after the leading "0" ("x" = any digit).
CHINESE_LANDLINE_AREAS = ("10", "21", "22", "23") + tuple(f"{first}xx" for first in "3456789")

# Every character here becomes "," at the end of Chinese normalisation: ASCII punctuation, then the
# Zhon marks as inclusive code point ranges (U+FF0E FULLWIDTH FULL STOP is deliberately absent).
_ZHON_RANGES = (
    (0xFF01, 0xFF01), (0xFF1F, 0xFF1F), (0xFF61, 0xFF61), (0x3002, 0x3002), (0xFF02, 0xFF0D),
    (0xFF0F, 0xFF0F), (0xFF1A, 0xFF1E), (0xFF20, 0xFF20), (0xFF3B, 0xFF40), (0xFF5B, 0xFF60),
    (0xFF62, 0xFF64), (0x3001, 0x3001), (0x3003, 0x3003), (0x300A, 0x300F), (0x3010, 0x3011),
    (0x3014, 0x301F), (0x3030, 0x3030), (0x303E, 0x303F), (0x2013, 0x2014), (0x2018, 0x2019),
    (0x201B, 0x201F), (0x2026, 0x2027), (0xFE4F, 0xFE4F), (0x00B7, 0x00B7), (0x3008, 0x3009),
)  # fmt: skip
CHINESE_PUNCTUATION = frozenset(string.punctuation) | frozenset(
    chr(code) for low, high in _ZHON_RANGES for code in range(low, high + 1)
)
