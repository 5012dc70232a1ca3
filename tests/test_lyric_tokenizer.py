"""Lyric tokenizer: reference ids for every fixture case, batching/padding, Chinese number
normalisation, language fallbacks, lazy language libraries, thread safety and the demo vocabulary."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors.torch import load_file

from acestep_app.acestep_v1.lyrics.chinese_numbers import normalize_chinese_text, spell_cardinal
from acestep_app.acestep_v1.lyrics.line_cleaner import clean_line
from acestep_app.acestep_v1.lyrics.tokenizer import (
    LANGUAGE_TAG_IDS,
    STRUCTURE_TAG_IDS,
    LyricTokenizer,
    encoding_language,
    write_demo_vocab,
)


@pytest.fixture(scope="module")
def tokenizer(lyric_vocab):
    return LyricTokenizer.from_file(lyric_vocab)


@pytest.fixture(scope="module")
def lyric_cases(cases_dir):
    return json.loads((cases_dir / "lyric_tokenizer.json").read_text(encoding="utf-8"))["items"]


def test_every_reference_case_is_id_exact(tokenizer, lyric_cases):
    assert len(lyric_cases) == 14
    mismatches = [
        (case["lyrics"], tokenizer.tokenize_lyrics(case["lyrics"]), case["token_ids"])
        for case in lyric_cases
        if tokenizer.tokenize_lyrics(case["lyrics"]) != case["token_ids"]
    ]
    assert not mismatches


def test_instrumental_and_blank_lines(tokenizer):
    assert tokenizer.tokenize_lyrics("[inst]") == [261, 259, 6688, 2]
    assert tokenizer.tokenize_lyrics("") == [261, 2]
    assert tokenizer.tokenize_lyrics("\n  \n") == [261, 2, 2, 2]


def test_structure_lines_are_english_and_unsupported_languages_fall_back(tokenizer):
    assert encoding_language("[chorus]") == "en"  # LangSegment says "zh" for it
    assert encoding_language("[verse] 我爱你") == "en"
    assert encoding_language("Bonjour mon amour, je t'aime") == "en"  # detected "hr"
    assert encoding_language("Guten Morgen, wie geht's?") == "de"
    assert tokenizer.tokenize_lyrics("[verse]")[1:3] == [LANGUAGE_TAG_IDS["en"], STRUCTURE_TAG_IDS["verse"]]


def test_ids_and_mask_pad_with_zeros(tokenizer):
    ids, mask = tokenizer.ids_and_mask(["[inst]", "", "Hello world"])
    hello = tokenizer.tokenize_lyrics("Hello world")
    assert ids.dtype == mask.dtype == torch.long
    assert ids.shape == mask.shape == (3, len(hello))
    assert ids[0].tolist() == [261, 259, 6688, 2] + [0] * (len(hello) - 4)
    assert mask[0].tolist() == [1] * 4 + [0] * (len(hello) - 4)
    assert ids[1].tolist() == [0] * len(hello) and mask[1].sum() == 0
    assert ids[2].tolist() == hello and mask[2].tolist() == [1] * len(hello)


def test_empty_lyrics_give_one_masked_token(tokenizer):
    ids, mask = tokenizer.ids_and_mask([""])
    assert ids.tolist() == [[0]] and mask.tolist() == [[0]]


@pytest.mark.parametrize("case_name", ["e2e_batch2", "e2e_instrumental", "e2e_steps3"])
def test_matches_pipeline_inputs_of_e2e_cases(tokenizer, cases_dir, case_name):
    meta = json.loads((cases_dir / f"{case_name}.json").read_text(encoding="utf-8"))
    tensors = load_file(cases_dir / f"{case_name}.safetensors")
    batch = tensors["lyric_token_ids"].shape[0]
    ids, mask = tokenizer.ids_and_mask([meta["call_kwargs"]["lyrics"]] * batch)
    assert torch.equal(ids, tensors["lyric_token_ids"])
    assert torch.equal(mask, tensors["lyric_mask"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("在12.5秒内", "在十二点五秒内"),
        ("有50名士兵", "有五十名士兵"),
        ("2024年5月1日", "二零二四年五月一日"),
        ("涨了20%！", "涨了百分之二十,"),
        ("买了2000个", "买了两千个"),
        ("电话13812345678", "电话一三八一二三四五六七八"),
        ("编号2048", "编号二零四八"),
        ("1/3的人", "三分之一的人"),
        ("P2P平台", "P2P平台"),
    ],
)
def test_chinese_number_normalisation(text, expected):
    assert normalize_chinese_text(text) == expected


def test_chinese_numerals():
    assert spell_cardinal("10") == "十"
    assert spell_cardinal("100000") == "十万"
    assert spell_cardinal("2005") == "两千零五"
    assert spell_cardinal("22") == "二十二"
    assert spell_cardinal("0.5") == "零点五"


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("Numbers 1 2 3 and 2024 dollars $5", "en", "numbers one two three and two thousand and twenty-four dollars five dollars"),
        ("It's the 1st time, 12.5%", "en", "it's the first time, twelve point five percent"),
        ("Hello Mr. Smith & Dr. Jones", "en", "hello mister smith and doctor jones"),
        ("Es gab 50 Soldaten", "de", "es gab fünfzig soldaten"),
        ("1.000 étoiles", "fr", "mille étoiles"),
        ("我爱你 12", "zh", "wo3ai4ni3 shi2er4"),
        ("这个那个", "zh", "zhe4ge4na4ge4"),  # pypinyin 0.53.0 (the reference's); 0.55 says ge5
        ("사랑해", "ko", "salanghae"),
        ("नमस्ते  दुनिया", "hi", "नमस्ते दुनिया"),
    ],
)  # fmt: skip
def test_line_cleaners(text, lang, expected):
    assert clean_line(text, lang) == expected


def test_unknown_cleaner_language_raises():
    with pytest.raises(NotImplementedError):
        clean_line("hola", "xx")


def test_language_libraries_load_lazily(lyric_vocab):
    script = (
        "import sys\n"
        "from acestep_app.acestep_v1.lyrics.tokenizer import LyricTokenizer\n"
        f"t = LyricTokenizer.from_file({str(lyric_vocab)!r})\n"
        "t.tokenize_lyrics('[verse]\\nHello world')\n"
        "print(sorted(m for m in ('pypinyin', 'cutlet', 'fugashi', 'hangul_romanize') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_concurrent_tokenization_matches_sequential(tokenizer, lyric_cases):
    lyrics = [case["lyrics"] for case in lyric_cases] * 3
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(tokenizer.tokenize_lyrics, lyrics))
    assert results == [tokenizer.tokenize_lyrics(text) for text in lyrics]


def test_demo_vocab_roundtrip(tmp_path):
    path = tmp_path / "vocab.json"
    vocab_size = write_demo_vocab(path)
    assert vocab_size == 6693  # same id space as the official vocabulary
    demo = LyricTokenizer.from_file(path)
    assert demo.vocab_size == vocab_size
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["model"]["type"] == "BPE" and document["pre_tokenizer"] == {"type": "Whitespace"}
    assert len(document["model"]["vocab"]) < 300

    assert demo.tokenize_lyrics("[inst]") == [261, 259, 6688, 2]
    ids = demo.tokenize_lyrics("[verse]\nI love you, 2 times\n\n[chorus]\n你好")
    assert ids[:4] == [261, 259, 6683, 2]
    assert ids[-1] == 2 and 5023 in ids and 6684 in ids
    assert all(0 <= i < vocab_size for i in ids)
    assert 1 not in ids  # characters and pinyin are covered (no [UNK])
    assert demo.tokenizer.token_to_id("love") in ids  # the demo merges apply
    ids_batch, mask = demo.ids_and_mask(["[inst]", ""])
    assert ids_batch.tolist() == [[261, 259, 6688, 2], [0, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [0, 0, 0, 0]]
