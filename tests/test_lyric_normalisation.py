"""Lyric normalisation (shared/spec/lyric-normalisation.md): the lyric-vector parity command on the
public vectors, the cleaner's stages and their failure isolation, the Chinese normaliser's spelling
modes, categories and reference quirks, the data tables and the licence notices that ship with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from acestep_app.cli import main
from acestep_app.acestep_v1.lyrics import tables as normalisation_tables
from acestep_app.acestep_v1.lyrics import tables_mpl as normalisation_tables_mpl
from acestep_app.acestep_v1.lyrics.chinese_numbers import normalize_chinese_text, spell_cardinal, spell_digits
from acestep_app.acestep_v1.lyrics.line_cleaner import (
    clean_line,
    expand_abbreviations,
    expand_symbols,
    prepare,
    spell_numbers,
    trace_multilingual_clean,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def public_vectors(shared_dir) -> Path:
    path = shared_dir / "spec" / "lyric-vectors-public.json"
    assert path.is_file(), path
    return path


# --- the parity command on lyric vectors -----------------------------------------------------------


def test_parity_passes_every_public_lyric_vector(public_vectors, lyric_vocab, capsys):
    code = main(["parity", str(public_vectors), "--lyric-vocab", str(lyric_vocab)])
    output = capsys.readouterr().out
    assert output.splitlines()[-1] == "341 passed, 0 failed"
    assert "FAIL" not in output
    assert code == 0


def test_parity_names_a_failing_lyric_vector(public_vectors, lyric_vocab, tmp_path, capsys):
    document = json.loads(public_vectors.read_text(encoding="utf-8"))
    entries = [entry for entry in document["entries"] if entry["id"] in ("pub-000-en", "pub-122-zh")]
    entries[1]["stages"]["numbers"] = "三千一百二十和十二个"  # the "fixed" reading, not the reference's
    entries[1]["token_ids"][3] += 1
    path = tmp_path / "vectors.json"
    path.write_text(json.dumps({"entries": entries}, ensure_ascii=False), encoding="utf-8")
    code = main(["parity", str(path), "--lyric-vocab", str(lyric_vocab)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines[-1] == "1 passed, 1 failed"
    failing = [line for line in lines if line.startswith("FAIL pub-")]
    assert len(failing) == 1 and failing[0].startswith("FAIL pub-122-zh")
    assert "numbers '三十二零和十二个' != '三千一百二十和十二个'" in failing[0] and "token_ids differ at 3" in failing[0]
    assert "PASS en: 1/1 entries" in lines and "FAIL zh: 0/1 entries" in lines


def test_parity_k_filters_lyric_vectors(public_vectors, lyric_vocab, capsys):
    assert main(["parity", str(public_vectors), "--lyric-vocab", str(lyric_vocab), "-k=-ja"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "11 passed, 0 failed"


# --- the multilingual cleaner ----------------------------------------------------------------------


def test_prepare_drops_ascii_quotes_and_maps_turkish_capitals_first():
    assert prepare('Er sagte "Hallo" „ja“', "de") == "er sagte hallo „ja“"
    assert prepare("İstanbul ÖZEL ÜZÜM", "tr") == "istanbul özel üzüm"
    assert prepare("İstanbul", "en") == "i\u0307stanbul"  # full Unicode lower(): two code points


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("1,234,567 stars", "en", "one million, two hundred and thirty-four thousand, five hundred and sixty-seven stars"),
        ("3.141", "de", "dreitausendeinhunderteinundvierzig"),  # dot grouping treats x.yyy as thousands
        ("10 000 fois", "fr", "dix zéro fois"),  # matched as a group, but there is no dot to delete
        ("1.5.2", "en", "one point five.two"),
        ("12,5", "tr", "oniki,beş"),  # no decimal step in Turkish
        ("1.5", "tr", "birincibeş"),  # ... so the dot makes an ordinal
        ("2os", "es", "segundos"),  # the first listed suffix wins, no boundary after it
        ("4thewin", "en", "fourthewin"),
        ("ich habe 3.", "de", "ich habe dritte"),
        ("30°", "it", "trentesimo"),
        ("1번째 2번", "ko", "첫 번째 두 번째"),
        ("21€ 20€", "pt", "vinte vinte euros"),  # whole amounts cut at the last " e "
        ("$20", "ko", "이십달러 영센트"),  # no ", " to cut at
        ("$20 y 21€", "es", "veinte dólares y veintiún euros"),
    ],
)  # fmt: skip
def test_number_stage(text, lang, expected):
    assert spell_numbers(text, lang) == expected


def test_failing_currency_skips_the_later_ones_but_keeps_the_earlier():
    # pl: GBP (tried first) raises, so the $ amount is read as a plain number; ko: EUR raises after USD.
    assert spell_numbers("$20 i £5", "pl") == "$dwadzieścia i £pięć"
    assert spell_numbers("$20 그리고 20€", "ko") == "이십달러 영센트 그리고 이십€"


@pytest.mark.parametrize(
    ("text", "lang", "error"),
    [
        ("bylo tam 50 vojáků", "cs", "NotImplementedError"),  # num2words 0.5.14 has no "cz"
        ("x 1" + "0" * 40, "es", "OverflowError"),
        ("x 1" + "0" * 62, "ru", "KeyError"),
    ],
)
def test_a_failing_number_stage_leaves_the_line_as_prepared(text, lang, error):
    trace = trace_multilingual_clean(text + " 2,5 £3", lang)
    assert trace.numbers == trace.prepared
    assert trace.errors["numbers"].split(":")[0] == error
    assert set(trace.errors) == {"numbers"}


def test_czech_line_without_digits_has_no_number_error():
    trace = trace_multilingual_clean("Dr. Novák & Ing. Svoboda", "cs")
    assert trace.errors == {}
    assert trace.cleaned == "doktor novák a inženýr svoboda"


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("hello mr. smith and dr. jones", "en", "hello mister smith and doctor jones"),
        ("baker st. and mr quiet", "en", "baker saint and mr quiet"),  # no dot, no expansion
        ("mrs. and mr.", "en", "misess and mister"),
        ("o 5 p.m.", "pl", "o 5 panim."),
        ("г-жа иванова и д-р петров", "ru", "госпожа иванова и доктор петров"),  # Russian: no dot
        ("dr. 李", "zh", "dr. 李"),  # no table for zh
    ],
)
def test_abbreviation_stage(text, lang, expected):
    assert expand_abbreviations(text, lang) == expected


def test_symbol_stage_spaces_each_word_and_strips_the_line():
    assert expand_symbols("  rock&roll 100% #1 ", "en") == "rock and roll 100 percent hash 1"
    assert expand_symbols("4° , feel it", "en") == "4 degree , feel it"
    assert expand_symbols("a   b", "en") == "a b"  # one double-space pass per symbol
    assert expand_symbols("20€ ¥", "fr") == "20€ ¥"  # no word for these: [UNK] later


def test_cleaner_collapses_unicode_whitespace_last():
    trace = trace_multilingual_clean("tabs\tand\xa0no-break\u2003spaces", "en")
    assert trace.symbols == "tabs\tand\xa0no-break\u2003spaces"
    assert trace.cleaned == "tabs and no-break spaces"


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("我爱你 [Chorus]", "zh", "wo3ai4ni3 ,chorus,"),
        ("£5", "zh", "ying1bang4 wu3"),
        ("사랑해 2번", "ko", "salanghae du beon-jjae"),
        ("１２３ です", "ja", "123 desu"),
        ("Hello  WORLD ", "hi", "hello world "),  # no strip for hi
        ("Hola 1", "es-ES", "hola uno"),  # the region is dropped
        ("", "en", ""),
    ],
)
def test_clean_line_per_language(text, lang, expected):
    assert clean_line(text, lang) == expected


# --- the Chinese normaliser ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "cardinal", "digits"),
    [
        ("0", "零", "零"), ("00", "", "零零"), ("007", "零七", "零零七"), ("2", "二", "二"), ("10", "十", "一零"),
        ("110", "一百一十", "一一零"), ("200", "两百", "二零零"), ("222", "两百二十二", "二二二"),
        ("1010", "一千零一十", "一零一零"), ("12000", "一万两千", "一二零零零"), ("20200", "两万零二百", "二零二零零"),
        ("100500", "十万零五百", "一零零五零零"), ("220000", "二十二万", "二二零零零零"),
        ("123456789", "一亿两千三百四十五万六千七百八十九", "一二三四五六七八九"),
        ("1000000000000", "一兆", "一" + "零" * 12), ("100000000000000000000", "一垓", "一" + "零" * 20),
        (".5", "零点五", "零点五"), ("10.5", "十点五", "一零点五"), ("0.05", "零点零五", "零点零五"),
        ("２０２４", "两千零百二十四", "二零二四"),  # full-width zeros are not trimmed as zeros
    ],
)  # fmt: skip
def test_chinese_spelling_modes(number, cardinal, digits):
    assert spell_cardinal(number) == cardinal
    assert spell_digits(number) == digits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024年02月14日", "二零二四年零二月十四日"),  # date: year by digits, month and day as numbers
        ("98年和78年", "九八年和七十八年"),  # 78年 is no date year: a counted number
        ("1850年", "一千八百五十年"),
        ("12块5和2千块", "十二块五和二千块"),  # money: 千 alone is the unit
        ("1块12", "一块一二"),
        ("100多块", "一百多块"),
        ("打+86 13912345678", "打八六一三九一二三四五六七八"),  # mobile
        ("座机0755-1234567", "座机零七五五一二三四五六七"),  # landline
        ("12345678个", "一二三四五六七八个"),  # 8 digits read as a landline first
        ("7/12", "十二分之七"),
        ("2024/5/1", "五分之两千零二十四,一"),
        ("62％和12.5%", "百分之六十二和百分之十二点五"),
        ("3公斤2千克", "三公斤二千克"),  # 千 is a money unit before 千克 can be a quantifier
        ("编号27149 1234.5", "编号二七一四九 一二三四,五"),  # digit runs, also inside decimals
        ("1" * 35, "一" * 32 + "一百一十一"),  # 32-digit chunks, then the rest as a number
        ("p2p和mp3和a二b", "p2p和mp三和a2b"),
    ],
)
def test_chinese_categories(text, expected):
    assert normalize_chinese_text(text) == expected


def test_chinese_first_occurrence_quirk():
    assert normalize_chinese_text("3120和12个") == "三十二零和十二个"
    assert normalize_chinese_text("5120和20只") == "五十一二十和二十只"


def test_chinese_frame_markers_and_punctuation():
    assert normalize_chinese_text("100$") == "一百"  # a trailing "$" goes with the end marker
    assert normalize_chinese_text("^_^ 开心") == ",, 开心"
    assert normalize_chinese_text("a^b$c") == "a,b,c"
    assert normalize_chinese_text("《歌》“你好”…-5:30") == ",歌,,你好,,,五,三十"
    assert normalize_chinese_text("ａｂ．€£°") == "ａｂ．€£°"  # not punctuation here


# --- tables and notices ----------------------------------------------------------------------------


def test_tables_hold_the_spec_counts():
    assert len(normalisation_tables.CHINESE_QUANTIFIERS) == len(set(normalisation_tables.CHINESE_QUANTIFIERS)) == 152
    assert len(normalisation_tables.CHINESE_PUNCTUATION) == 32 + 79 - 1  # "-" is in both lists
    assert "．" not in normalisation_tables.CHINESE_PUNCTUATION
    assert len(normalisation_tables.ENGLISH_ABBREVIATIONS) == 18
    symbol_languages = set(normalisation_tables_mpl.SYMBOL_WORDS)
    assert len(symbol_languages) == 15 and "ja" not in symbol_languages and "hi" not in symbol_languages
    assert all(len(words) == len(normalisation_tables_mpl.SYMBOLS) for words in normalisation_tables_mpl.SYMBOL_WORDS.values())
    assert set(normalisation_tables_mpl.ORDINAL_SUFFIXES) == symbol_languages - {"zh"}


def test_mpl_table_file_carries_the_mpl_notice():
    source = Path(normalisation_tables_mpl.__file__).read_text(encoding="utf-8")
    assert source.startswith("# This Source Code Form is subject to the terms of the Mozilla Public License, v. 2.0.")
    assert "https://mozilla.org/MPL/2.0/" in source.splitlines()[1]


def test_notice_names_third_party_material_and_ships_in_the_package():
    notice = (PROJECT_ROOT / "NOTICE").read_text(encoding="utf-8")
    for name in ("coqui-ai/TTS", "MPL-2.0", "keithito/tacotron", "chn_text_norm", "zhon", "ACE-Step/ACE-Step-v1-3.5B",
                 "acestep/models/lyrics_utils/vocab.json", "Qwen/Qwen3-4B-Instruct-2507", "lyrics/tables_mpl.py"):
        assert name in notice, name
    assert (PROJECT_ROOT / "acestep_app" / "data" / "NOTICE").read_text(encoding="utf-8") == notice
