"""``acestep-app parity VECTORS.json``: check lyric normalisation against reference lyric vectors.

A vector file (format of ``shared/spec/lyric-vectors-public.json``) holds one entry per lyric line:
the reference's output after every cleaner stage, the normalised text, the per-line token ids and
the whole-lyrics ids with the detected language. Every field is compared exactly. One ``FAIL`` line
per failing entry, one ``PASS``/``FAIL`` summary line per language, then ``N passed, M failed``.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from acestep_app.devtools.parity.common import find_lyric_vocab
from acestep_app.errors import WeightsError

STAGES = ("prepared", "numbers", "abbreviations", "symbols", "cleaned")
ISOLATED = ("numbers", "abbreviations", "symbols")  # stages whose failure the vectors record
SHOWN_CHARACTERS = 80


def is_lyric_vector_file(path: Path) -> bool:
    return path.is_file() and path.suffix == ".json"


def shorten(value) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARACTERS else text[: SHOWN_CHARACTERS - 3] + "..."


def first_difference(actual: list[int], expected: list[int]) -> str:
    index = next((i for i, (a, e) in enumerate(zip(actual, expected)) if a != e), min(len(actual), len(expected)))
    return f"differ at {index} (got {len(actual)} ids, expected {len(expected)})"


def stage_mismatches(entry: dict) -> list[str]:
    from acestep_app.acestep_v1.lyrics.line_cleaner import trace_multilingual_clean

    expected = entry["stages"]
    trace = trace_multilingual_clean(entry["input"], entry["lang"])
    problems = [
        f"{stage} {shorten(getattr(trace, stage))} != {shorten(expected[stage])}"
        for stage in STAGES
        if getattr(trace, stage) != expected[stage]
    ]
    for stage in ISOLATED:
        actual_error, expected_error = trace.errors.get(stage), expected.get(f"{stage}_error")
        if actual_error != expected_error:
            problems.append(f"{stage}_error {shorten(actual_error)} != {shorten(expected_error)}")
    return problems


def pipeline_mismatches(entry: dict, tokenizer) -> list[str]:
    from acestep_app.acestep_v1.lyrics.tokenizer import (
        detect_language,
        encoding_language,
    )

    line = entry["input"].strip()
    problems = []
    detected = detect_language(line) if line else None
    if detected != entry["pipeline_detected_lang"]:
        problems.append(f"pipeline_detected_lang {detected!r} != {entry['pipeline_detected_lang']!r}")
    lang = encoding_language(line) if line else None
    if line and lang != entry["pipeline_lang"]:
        problems.append(f"pipeline_lang {lang!r} != {entry['pipeline_lang']!r}")
    ids = tokenizer.tokenize_lyrics(entry["input"])
    if ids != entry["pipeline_token_ids"]:
        problems.append("pipeline_token_ids " + first_difference(ids, entry["pipeline_token_ids"]))
    return problems


def entry_mismatches(entry: dict, tokenizer) -> list[str]:
    """Every field of one vector entry that this install reproduces differently."""
    from acestep_app.acestep_v1.lyrics.line_cleaner import clean_line

    problems = stage_mismatches(entry) if "stages" in entry else []
    normalised = clean_line(entry["input"], entry["lang"])
    if normalised != entry["normalised"]:
        problems.append(f"normalised {shorten(normalised)} != {shorten(entry['normalised'])}")
    ids = tokenizer.encode_line(entry["input"], entry["lang"])
    if ids != entry["token_ids"]:
        problems.append("token_ids " + first_difference(ids, entry["token_ids"]))
    return problems + pipeline_mismatches(entry, tokenizer)


def check_entry(entry: dict, tokenizer) -> list[str]:
    try:
        return entry_mismatches(entry, tokenizer)
    except Exception as error:  # one broken entry is a failure; the others still run
        return [f"{type(error).__name__}: {error}"]


def default_lyric_vocab(args: argparse.Namespace) -> Path:
    return find_lyric_vocab(args.checkpoint or args.cases_dir.parent / "checkpoint")


def run_lyric_vectors(args: argparse.Namespace) -> int:
    from acestep_app.acestep_v1.lyrics.tokenizer import LyricTokenizer

    entries = json.loads(args.cases_dir.read_text(encoding="utf-8")).get("entries", [])
    entries = [entry for entry in entries if not args.only or args.only in entry["id"]]
    if not entries:
        print(f"no lyric vectors in {args.cases_dir}")
        return 1
    try:
        vocab = args.lyric_vocab or default_lyric_vocab(args)
    except WeightsError as error:
        print(f"error: {error}")
        return 1
    tokenizer = LyricTokenizer.from_file(vocab)
    totals, failures = Counter(), Counter()
    for entry in entries:
        problems = check_entry(entry, tokenizer)
        totals[entry["lang"]] += 1
        if problems:
            failures[entry["lang"]] += 1
            print(f"FAIL {entry['id']} {shorten(entry['input'])}: " + "; ".join(problems), flush=True)
    for lang, total in totals.items():
        status = "FAIL" if failures[lang] else "PASS"
        print(f"{status} {lang}: {total - failures[lang]}/{total} entries")
    failed = sum(failures.values())
    print(f"{len(entries) - failed} passed, {failed} failed")
    return 0 if failed == 0 else 1
