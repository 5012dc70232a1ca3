"""``acestep-app parity VECTORS.json``: check the ACE-Step 1.5 planner against the official functions.

A planner vector file (format of ``shared/spec/acestep15-planner-vectors-public.json``, kind
``acestep15-planner-vectors``) holds vectors of six kinds, each the return value of an official
function: the phase 1 and phase 2 chat messages with their unconditional twins, the chain of thought
as YAML, parsing an output (metadata, codes, lyrics), the generation length, and the value sets.
Every field is compared exactly. One line per vector, then ``N passed, M failed``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

FILE_KIND = "acestep15-planner-vectors"
SHOWN_CHARACTERS = 100


def is_planner_vector_file(path: Path) -> bool:
    if not (path.is_file() and path.suffix == ".json"):
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == FILE_KIND


def phase1_messages(given: dict) -> dict:
    from acestep_app.acestep_15.planner import prompts

    return {
        "messages": prompts.phase1_messages(given["caption"], given["lyrics"]),
        "add_generation_prompt": True,
        "uncond_messages": prompts.phase1_uncond_messages(given["lyrics"], given.get("negative_prompt")),
    }


def phase2_messages(given: dict) -> dict:
    from acestep_app.acestep_15.planner import prompts

    cot = prompts.format_cot(given["cot"])
    return {
        "messages": prompts.phase2_messages(given["caption"], given["lyrics"], cot),
        "add_generation_prompt": False,
        "uncond_messages": prompts.phase2_uncond_messages(given["caption"], given["lyrics"], given.get("negative_prompt")),
    }


def cot_yaml(given: dict) -> str:
    from acestep_app.acestep_15.planner.prompts import format_cot

    return format_cot(given)


def parse(given: str) -> dict:
    from acestep_app.acestep_15.planner.parsing import extract_lyrics, parse_output

    metadata, codes = parse_output(given)
    return {"metadata": metadata, "audio_codes": codes, "lyrics": extract_lyrics(given)}


def max_new_tokens(given: dict) -> int:
    from acestep_app.acestep_15.planner.prompts import max_new_tokens as length

    return length(given["duration"], given["max_model_len"])


def value_sets(_given: None) -> dict:
    from acestep_app.acestep_15.planner import values

    return {
        "keyscales": list(values.KEYSCALES),
        "timesignatures": list(values.TIME_SIGNATURES),
        "bpm_range": list(values.BPM_RANGE),
        "languages": list(values.LANGUAGES),
    }


KINDS: dict[str, Callable[[Any], Any]] = {
    "phase1_messages": phase1_messages,
    "phase2_messages": phase2_messages,
    "cot_yaml": cot_yaml,
    "parse": parse,
    "max_new_tokens": max_new_tokens,
    "value_sets": value_sets,
}


def shorten(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= SHOWN_CHARACTERS else text[: SHOWN_CHARACTERS - 3] + "..."


def differences(actual: Any, expected: Any, where: str = "") -> list[str]:
    """Where ``actual`` differs from ``expected``: one entry per differing leaf (dict keys and list items followed)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        keys = list(expected) + [key for key in actual if key not in expected]
        return [d for key in keys for d in differences(actual.get(key, "<missing>"), expected.get(key, "<missing>"), f"{where}.{key}")]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [d for i, (a, e) in enumerate(zip(actual, expected)) if a != e for d in differences(a, e, f"{where}[{i}]")]
    if actual == expected and type(actual) is type(expected):
        return []
    return [f"{where or 'value'}: got {shorten(actual)}, expected {shorten(expected)}"]


def check_vector(vector: dict) -> list[str]:
    """What this install computes differently for one vector (a failure to compute is one entry)."""
    run = KINDS.get(vector.get("kind"))
    if run is None:
        return [f"unknown vector kind {vector.get('kind')!r}"]
    try:
        return differences(run(vector.get("input")), vector["expected"])
    except Exception as error:  # a broken vector is a failure; the others still run
        return [f"{type(error).__name__}: {error}"]


def run_planner_vectors(args: argparse.Namespace) -> int:
    vectors = json.loads(args.cases_dir.read_text(encoding="utf-8")).get("vectors", [])
    named = [(f"{vector.get('kind')}-{index}", vector) for index, vector in enumerate(vectors)]
    named = [(name, vector) for name, vector in named if not args.only or args.only in name]
    if not named:
        print(f"no planner vectors in {args.cases_dir}")
        return 1
    failed = 0
    for name, vector in named:
        problems = check_vector(vector)
        failed += bool(problems)
        print(f"{'FAIL' if problems else 'PASS'} {name}" + (": " + "; ".join(problems) if problems else ""), flush=True)
    print(f"{len(named) - failed} passed, {failed} failed")
    return 0 if failed == 0 else 1
