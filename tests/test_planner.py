"""The ACE-Step 1.5 planner on the tiny random 5 Hz LM: constrained decoding, guidance, sampling order,
parsing and the parity vectors.

The tiny LM's weights are random, so its choices are arbitrary; what the tests check is what the
constraints guarantee whatever the weights: every value in its set, the field order, the code count.
Every run is seeded (fixed seeds), so each test is deterministic.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from acestep_app.acestep_15.planner import Planner, PlanRequest, SamplingConfig, prompts
from acestep_app.acestep_15.planner.constraints import Caption, Vocabulary, codes_script, cot_script
from acestep_app.acestep_15.planner.parsing import parse_metadata
from acestep_app.acestep_15.planner.sampling import GuidedSampler
from acestep_app.acestep_15.planner.values import (
    BPM_RANGE, KEYSCALES, LANGUAGES, PLAN_FIELDS, TIME_SIGNATURES, audio_code,
)  # fmt: skip
from acestep_app.cli import main

MAX_DURATION = 14  # the LM plans 10-14 s songs here: at most 70 codes a plan keeps the tests fast
CAPTION_TOKENS = 48  # random captions run long; the 512-token default is the same code path
SEEDS = (0, 1, 2, 3)
CODE = re.compile(r"<\|audio_code_(\d+)\|>")


@pytest.fixture(scope="module")
def planner(tiny_planner_lm) -> Planner:
    return Planner.from_pretrained(tiny_planner_lm, device="cpu", max_duration=MAX_DURATION, caption_tokens=CAPTION_TOKENS)


def written_keys(text: str) -> list[str]:
    """The field names in the order the chain of thought writes them."""
    body = text.removeprefix("<think>\n").split("</think>")[0]
    return [line.split(":", 1)[0] for line in body.split("\n") if line and not line[0].isspace()]


@pytest.mark.parametrize("seed", SEEDS)
def test_phase1_writes_every_field_in_order_with_values_in_their_sets(planner, seed):
    script = cot_script(planner.vocabulary, PLAN_FIELDS, caption_tokens=CAPTION_TOKENS)
    prompt = prompts.render(planner.tokenizer, prompts.phase1_messages("A calm piano song", "[Verse]\nla la"),
                            add_generation_prompt=True)
    uncond = prompts.render(planner.tokenizer, prompts.phase1_uncond_messages("[Verse]\nla la"), add_generation_prompt=True)
    out = planner.generate(prompt, uncond, script, SamplingConfig(), torch.Generator().manual_seed(seed),
                           max_new_tokens=prompts.max_new_tokens(None))
    assert out.text.startswith("<think>\n")
    assert out.text.endswith("\n</think><|im_end|>")  # closed, then the end of sequence
    assert written_keys(out.text) == list(PLAN_FIELDS)
    values = parse_metadata(out.text)
    assert BPM_RANGE[0] <= values["bpm"] <= BPM_RANGE[1]
    assert 10 <= values["duration"] <= MAX_DURATION
    assert values["keyscale"] in KEYSCALES
    assert values["language"] in LANGUAGES
    assert int(values["timesignature"]) in TIME_SIGNATURES
    caption = out.text.split("\ncaption:")[1].split("\nduration:")[0]
    assert "`" not in caption and not CODE.search(caption) and "<|im_end|>" not in caption


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_plan_writes_duration_times_five_codes_and_hands_them_to_the_pipeline(planner, seed):
    plan = planner.plan(PlanRequest(caption="A calm piano song", lyrics="[Verse]\nla la"), seed=seed)
    lm_duration = plan.cot["duration"]
    assert 10 <= lm_duration <= MAX_DURATION
    codes = CODE.findall(plan.audio_codes)
    assert len(codes) == lm_duration * 5 == plan.code_count
    assert plan.audio_codes == "".join(audio_code(int(c)) for c in codes)  # nothing but code tokens
    assert all(int(c) < len(planner.vocabulary.code_index) for c in codes)
    assert plan.duration == lm_duration  # the DiT's duration is the codes' length
    arguments = plan.pipeline_arguments()
    assert arguments["audio_codes"] == plan.audio_codes and arguments["audio_duration"] == lm_duration
    assert arguments["vocal_language"] == plan.cot["language"] in LANGUAGES  # the LM's language reaches the DiT
    assert arguments["prompt"] == plan.cot["caption"]  # the chain of thought's caption replaces the user's
    assert set(plan.from_planner) == {"bpm", "caption", "duration", "keyscale", "language", "timesignature", "audio_codes"}
    assert plan.tokens["phase1"] > 0 and plan.tokens["phase2"] == lm_duration * 5 + 1  # + the end of sequence


def test_user_metadata_is_injected_and_the_codes_follow_a_fractional_duration(planner):
    request = PlanRequest(caption="Jazz trio", lyrics="", bpm=95, keyscale="F# minor", duration=7.5, language="fr")
    plan = planner.plan(request, seed=5)
    assert (plan.cot["bpm"], plan.cot["keyscale"], plan.cot["duration"], plan.cot["language"]) == (95, "F# minor", 7, "fr")
    assert plan.code_count == 37  # int(7.5 x 5): the user's duration, not the chain of thought's whole seconds
    assert plan.duration == 37 / 5  # the codes' length, computed the same way
    assert (plan.bpm, plan.keyscale, plan.language) == (95, "F# minor", "fr")
    assert set(plan.from_planner) == {"caption", "timesignature", "audio_codes"}
    assert any("metadata from the LM: " in line and "timesignature" in line for line in plan.logs)


def test_all_metadata_given_skips_phase_1(planner):
    request = PlanRequest(caption="Ambient", lyrics="[Instrumental]", bpm=70, keyscale="C major",
                          timesignature="3", duration=3)
    plan = planner.plan(request, seed=0)
    assert "phase1" not in plan.tokens
    assert plan.cot == {"bpm": 70, "caption": None, "duration": 3, "keyscale": "C major", "language": None,
                        "timesignature": "3"}
    assert plan.code_count == 15 and plan.caption == "Ambient" and plan.from_planner == ("audio_codes",)
    assert plan.language is None  # nobody named one...
    defaulted = planner.plan(PlanRequest(**{**request.__dict__, "default_language": "en", "thinking": False}), seed=0)
    assert defaulted.language == "en" and "language" not in defaulted.from_planner  # ...unless a default is given


def test_thinking_off_writes_no_codes_and_no_cot_metas_writes_no_chain_of_thought(planner):
    metadata_only = planner.plan(PlanRequest(caption="Rock", duration=4, thinking=False), seed=0)
    assert metadata_only.audio_codes == "" and "phase2" not in metadata_only.tokens and "phase1" in metadata_only.tokens
    codes_only = planner.plan(PlanRequest(caption="Rock", duration=4, use_cot_metas=False), seed=0)
    assert "phase1" not in codes_only.tokens and codes_only.code_count == 20 and codes_only.caption == "Rock"


def test_skipped_caption_and_language_are_not_written(planner):
    request = PlanRequest(caption="Folk", duration=2, use_cot_caption=False, use_cot_language=False, thinking=False)
    plan = planner.plan(request, seed=1)
    assert plan.cot["caption"] is None and plan.cot["language"] is None
    assert plan.caption == "Folk" and plan.language is None


def test_codes_without_a_target_may_stop_at_any_count(planner):
    prompt = prompts.render(planner.tokenizer, prompts.phase2_messages("x", "", prompts.format_cot({"bpm": 90})),
                            add_generation_prompt=False)
    out = planner.generate(prompt, None, codes_script(planner.vocabulary, None), SamplingConfig(cfg_scale=1.0),
                           torch.Generator().manual_seed(0), max_new_tokens=40)
    assert CODE.sub("", out.text) in ("", "<|im_end|>")  # only codes, then possibly the end


def test_caption_ends_at_the_first_unindented_line_and_at_its_limit(planner):
    vocabulary = planner.vocabulary
    caption = Caption(vocabulary, limit=3)
    scores = torch.zeros(len(vocabulary))
    newline, indented = vocabulary.newline_id, vocabulary.encode(" soft")[0]
    unindented = vocabulary.encode("duration")[0]
    assert caption.constrain(scores) is not None
    caption.advance(newline)
    scores[indented] = 5.0  # the most likely token continues the line: the caption goes on
    assert caption.constrain(scores) is not None
    caption.advance(indented)
    caption.advance(newline)
    scores[unindented] = 9.0  # the most likely token starts a new field: the caption ends
    assert caption.constrain(scores) is None
    cut = Caption(vocabulary, limit=2)
    cut.advance(indented)
    cut.advance(indented)
    allowed = cut.constrain(torch.zeros(len(vocabulary)))
    assert torch.isfinite(allowed).nonzero().flatten().tolist() == [newline]  # the limit forces the line break


def test_guided_step_mixes_in_float32_and_draws_one_token_for_both_rows():
    cond = torch.tensor([0.0, 2.0, 1.9, -5.0])
    uncond = torch.tensor([0.0, 2.5, 0.0, -5.0])  # guided: [0, 1.5, 3.8, -5]: token 2 wins, cond alone picks 1
    sampler = GuidedSampler([None], SamplingConfig(temperature=0.0, top_p=1.0, cfg_scale=2.0), torch.Generator())
    forced = sampler(torch.zeros(2, 3, dtype=torch.long), torch.stack([cond, uncond]))
    assert forced.argmax(dim=-1).tolist() == [2, 2]
    assert torch.isinf(forced).sum() == 6  # every other token is banned in both rows


def test_top_p_filters_before_the_temperature_flattens():
    # At temperature 1, token 0 alone holds 0.6 > top_p: nothing else survives top-p. Flattened by a
    # high temperature first (transformers' order), tokens 1-3 would survive and be drawn.
    logits = torch.log(torch.tensor([[0.6, 0.2, 0.1, 0.1]]))
    sampler = GuidedSampler([None], SamplingConfig(temperature=5.0, top_p=0.5, cfg_scale=1.0),
                            torch.Generator().manual_seed(0))
    draws = {int(sampler(torch.zeros(1, 1, dtype=torch.long), logits).argmax()) for _ in range(50)}
    assert draws == {0}


def test_a_constraint_acts_before_top_k(planner):
    vocabulary = planner.vocabulary
    script = codes_script(vocabulary, target=2)
    logits = torch.zeros(1, len(vocabulary))
    logits[0, vocabulary.encode("hello")[0]] = 100.0  # top-1 before the constraint, banned by it
    sampler = GuidedSampler([script], SamplingConfig(top_k=1, cfg_scale=1.0), torch.Generator().manual_seed(0))
    token = int(sampler(torch.zeros(1, 1, dtype=torch.long), logits).argmax())
    assert token in vocabulary.code_index


def test_left_padded_guidance_batch_leaves_the_conditional_row_unchanged(planner):
    """The conditional row, padded beside a longer unconditional prompt, decodes as it does alone
    (cfg_scale 1: uncond + 1 x (cond - uncond) is cond up to float32 rounding, far below the gaps
    between the tiny LM's logits, so greedy picks the same tokens)."""
    prompt = prompts.render(planner.tokenizer, prompts.phase1_messages("Pop", ""), add_generation_prompt=True)
    longer = prompts.render(planner.tokenizer, prompts.phase1_messages("A much longer caption " * 4, "la\nla"),
                            add_generation_prompt=True)
    greedy = SamplingConfig(temperature=0.0, cfg_scale=1.0)

    def run(uncond):
        script = cot_script(planner.vocabulary, PLAN_FIELDS, caption_tokens=CAPTION_TOKENS)
        return planner.generate(prompt, uncond, script, greedy, torch.Generator(), max_new_tokens=200).text

    assert run(longer) == run(None)


def test_inspire_writes_metadata_with_genres_and_lyrics_without_codes(planner):
    sketch = planner.inspire("a rainy night in Tokyo", instrumental=False, seed=0, language="ja", lyrics_tokens=40)
    assert written_keys(sketch.text) == ["bpm", "caption", "duration", "genres", "keyscale", "language", "timesignature"]
    assert sketch.metadata["language"] == "ja" and sketch.metadata["keyscale"] in KEYSCALES
    assert not CODE.search(sketch.text)
    assert sketch.lyrics == sketch.text.split("</think>", 1)[1].removesuffix("<|im_end|>").strip()


def test_instrumental_inspiration_without_lyrics_says_instrumental(planner):
    sketch = planner.inspire("", instrumental=True, seed=1, lyrics_tokens=20)
    assert sketch.lyrics  # the LM's words, or "[Instrumental]" when it wrote none
    assert prompts.inspire_messages("", True)[1]["content"] == "NO USER INPUT\n\ninstrumental: true"


def test_tiny_lm_keeps_the_real_vocabulary_layout(planner):
    tokenizer = planner.tokenizer
    think_end = tokenizer.convert_tokens_to_ids("</think>")
    codes = sorted(planner.vocabulary.code_index.items())
    assert [token for token, _ in codes] == list(range(think_end + 1, think_end + 1 + len(codes)))
    assert [index for _, index in codes] == list(range(len(codes)))
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"]) == list(
        range(think_end - 4, think_end)
    )


def test_a_tokenizer_without_audio_codes_is_refused(tiny_planner_lm):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_planner_lm)
    plain = type(tokenizer).from_pretrained(tiny_planner_lm)
    plain.batch_decode = lambda ids, **kwargs: ["x" for _ in ids]  # a vocabulary with no code tokens
    with pytest.raises(ValueError, match="audio_code"):
        Vocabulary(plain, len(tokenizer))


def test_parity_command_passes_the_public_planner_vectors(shared_dir, capsys):
    code = main(["parity", str(shared_dir / "spec" / "acestep15-planner-vectors-public.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "34 passed, 0 failed"
    kinds = {line.split()[1].rsplit("-", 1)[0] for line in out.splitlines() if line.startswith("PASS")}
    assert kinds == {"phase1_messages", "phase2_messages", "cot_yaml", "parse", "max_new_tokens", "value_sets"}


def test_parity_command_reports_a_wrong_vector(shared_dir, tmp_path, capsys):
    import json

    data = json.loads((shared_dir / "spec" / "acestep15-planner-vectors-public.json").read_text())
    vector = next(v for v in data["vectors"] if v["kind"] == "max_new_tokens")
    data["vectors"] = [{**vector, "expected": vector["expected"] + 1}]
    path = tmp_path / "vectors.json"
    path.write_text(json.dumps(data))
    assert main(["parity", str(path)]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == "0 passed, 1 failed"


def test_planner_settings_pick_the_lm_folder_and_its_manifest_entry(tmp_path, tiny_planner_lm):
    import shutil

    from acestep_app.acestep_15.planner.config import LM_CHECKPOINTS, PlannerSettings, load_planner

    for size, checkpoint in LM_CHECKPOINTS.items():
        settings = PlannerSettings(planner=size)
        assert settings.lm_folder(tmp_path) == tmp_path / checkpoint.folder
        assert settings.weight_entries() == [checkpoint.entry]
    assert PlannerSettings(planner_dir=str(tmp_path / "mine")).lm_folder(tmp_path) == tmp_path / "mine"
    assert PlannerSettings(planner="none").weight_entries() == [] and load_planner(PlannerSettings(planner="none"), tmp_path) is None
    assert load_planner(PlannerSettings(), tmp_path) is None  # no LM in the weights dir: text-only, logged
    shutil.copytree(tiny_planner_lm, tmp_path / LM_CHECKPOINTS["1.7B"].folder)
    planner = load_planner(PlannerSettings(planner_max_duration=12), tmp_path, device="cpu")
    assert planner is not None and planner.name == "acestep-5Hz-lm-1.7B"
    assert trie_values(planner, "duration") == ["10", "11", "12"]  # planner_max_duration bounds the LM's choice


def trie_values(planner: Planner, field: str) -> list[str]:
    """Every value a field's trie spells, as text."""
    values, stack = [], [((), planner.vocabulary.trie(field)[0])]
    while stack:
        tokens, node = stack.pop()
        if not node:
            values.append(planner.tokenizer.decode(list(tokens)).strip())
        stack.extend((tokens + (token,), child) for token, child in node.items())
    return sorted(values)


def test_value_tries_spell_exactly_the_official_sets(planner):
    assert trie_values(planner, "keyscale") == sorted(KEYSCALES)
    assert trie_values(planner, "language") == sorted(LANGUAGES)
    assert trie_values(planner, "timesignature") == ["2", "3", "4", "6"]
    assert trie_values(planner, "bpm") == sorted(str(v) for v in range(BPM_RANGE[0], BPM_RANGE[1] + 1))


def test_endpoint_requests_map_onto_plans_and_plans_onto_the_dits_conditions(planner):
    from acestep_app.acestep_15.planner.requests import conditions, plan_request, planner_report, sampling_config
    from acestep_app.acestep_15.schema import TextToMusicInput

    quiet = TextToMusicInput(prompt="Lo-fi beat", lyrics="[Verse]\nla", duration=3, bpm=80, lm_cfg_scale=3.0)
    request = plan_request(quiet)
    assert (request.caption, request.bpm, request.duration, request.language) == ("Lo-fi beat", 80, 3, None)
    assert sampling_config(quiet).cfg_scale == 3.0
    assert plan_request(TextToMusicInput(prompt="x", vocal_language="ko")).language == "ko"  # sent: forced
    plan = planner.plan(request, seed=3, sampling=sampling_config(quiet))
    dit = conditions(plan)
    assert dit.audio_codes == plan.audio_codes and dit.duration == 3.0 and dit.bpm == 80
    assert dit.vocal_language == plan.cot["language"] and dit.prompt == plan.cot["caption"]
    report = planner_report(plan)
    assert set(report["planned"]) == {"prompt", "key_scale", "time_signature", "vocal_language", "audio_codes"}
    assert report["audio_code_count"] == 15


def test_unconstrained_decoding_uses_only_what_parses(planner):
    plan = planner.plan(PlanRequest(caption="x", duration=2, bpm=90, keyscale="C major", timesignature="4",
                                    constrained=False), seed=0, sampling=SamplingConfig(cfg_scale=1.0))
    assert plan.tokens["phase2"] > 0  # the random LM writes freely: codes, text, the end...
    assert CODE.sub("", plan.audio_codes) == ""  # ...and only its code tokens reach the DiT
    assert plan.duration == (plan.code_count / 5 if plan.code_count else 2)


def test_inspire_writes_for_the_requested_duration(planner):
    sketch = planner.inspire("a waltz", instrumental=False, seed=2, duration=95.5, lyrics_tokens=10)
    assert sketch.metadata["duration"] == 95


def test_the_documented_toy_bench_runs_both_caches():
    """docs/acestep-15-planner.md's bench command, on the toy LM (same code path as the full-size run)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "bench/planner.py", "--size", "toy", "--codes", "2"], cwd=root,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| dynamic cache") or line.startswith("| static cache")]
    assert len(rows) == 2 and "H100 estimate" in result.stdout


def test_warmup_runs_both_phases(planner, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="acestep_app.acestep_15.planner.planner"):
        planner.warmup()
    assert "chain of thought" in caplog.text and "audio codes" in caplog.text
