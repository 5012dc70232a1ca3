"""The reference's bfloat16 cases (fixtures/acestep-v1-tiny-bf16) through the parity runner, sequential and batched.

Tolerances are the runner's, from the fixture README: exact up to the final latents (the reference is
bit-reproducible there and bfloat16 trajectories are chaotic: one rounding done differently ends
5e-2 .. 2e-1 away, so nothing looser tells it from a wrong implementation); the waveform within 5e-3
(2.5x the reference's own thread-count spread). conftest pins the reference's CPU kernels first.

On an Intel CPU MKL's FFT cannot take the reference's (AMD) code paths, so there the editing cases
run from their stored source latents and the encode path gets its own, stated tolerance.
"""

import json
import math

import pytest
from conftest import TINY_BF16_DIR

from acestep_app.devtools.parity import cases as parity
from acestep_app.engine.cpu_kernels import intel_cpu

CASES_DIR = TINY_BF16_DIR / "cases"
CASES = [path.stem for path in parity.case_files(CASES_DIR)]
CLIP_CASES = [name for name in CASES if "src_latents" in json.loads((CASES_DIR / f"{name}.json").read_text())["tensors"]]
RUNS = [(name, mode) for name in CASES for mode in ("sequential", "batched")]


@pytest.fixture(scope="module")
def runners(tiny_checkpoint, lyric_vocab):
    stored = intel_cpu()
    sequential = parity.ParityRunner(tiny_checkpoint, lyric_vocab, stored_source_latents=stored)
    batched = parity.ParityRunner(
        tiny_checkpoint, lyric_vocab, batched_guidance=True, pipelines=sequential.pipelines, stored_source_latents=stored
    )
    return {"sequential": sequential, "batched": batched}


def test_bf16_fixture_covers_text2music_and_editing():
    cases = {name: json.loads((CASES_DIR / f"{name}.json").read_text()) for name in CASES}
    assert len(cases) >= 4
    assert all(case["dtype"] == "bfloat16" for case in cases.values())
    assert {case.get("task", "text2music") for case in cases.values()} >= {"text2music", "retake", "edit"}
    assert CLIP_CASES


@pytest.mark.parametrize(("name", "mode"), RUNS)
def test_bf16_reference_case(runners, name, mode):
    result = runners[mode].run(CASES_DIR / f"{name}.json")
    assert result.error is None, result.error
    assert result.dtype == "bfloat16"
    assert any(what == "final_latents" for what, _, _ in result.checks)
    assert all(tolerance == 0.0 for what, _, tolerance in result.checks if what != "waveform_0")
    assert result.passed, result.line()


@pytest.mark.parametrize("name", CLIP_CASES)
def test_bf16_encode_path(runners, name):
    """The clip's encoded latents: exact, except on Intel CPUs (MKL's FFT code path, see the module doc)."""
    from safetensors.torch import load_file

    pipeline = runners["sequential"].pipeline_in("bfloat16")
    case = json.loads((CASES_DIR / f"{name}.json").read_text())
    audio, sample_rate = parity.load_case_audio(CASES_DIR, case["call_kwargs"]["src_audio_path"])
    expected = load_file(CASES_DIR / f"{name}.safetensors")["src_latents"]
    actual = pipeline.encode_audio(audio, sample_rate).float()
    tolerance = 0.0
    if intel_cpu():
        # MKL's Intel FFT rounds the STFT differently: a few dozen of the clip's bfloat16 log-mel values
        # land one bfloat16 step away, which the encoder carries into the latents as at most two
        # bfloat16 steps (2^-7 relative) of their largest magnitude.
        tolerance = 2 * 2.0 ** (math.floor(math.log2(expected.abs().max().item())) - 7)
    assert (actual - expected).abs().max().item() <= tolerance


def test_a_one_ulp_change_fails_a_bf16_case(runners, tmp_path):
    """Exact means exact: the final latents moved by one bfloat16 step make the case fail."""
    import torch
    from safetensors.torch import load_file, save_file

    name = "retake_v02_bf16"
    tensors = load_file(CASES_DIR / f"{name}.safetensors")
    bits = tensors["final_latents"].to(torch.bfloat16).view(torch.int16)
    tensors["final_latents"] = (bits + 1).view(torch.bfloat16).float()  # each value's next bfloat16
    (tmp_path / f"{name}.json").write_text((CASES_DIR / f"{name}.json").read_text())
    save_file(tensors, tmp_path / f"{name}.safetensors")
    result = runners["sequential"].run(tmp_path / f"{name}.json")
    assert not result.passed
    assert "final_latents" in result.line()


# -- memory layout of the DiT's inputs, task by task (fixture README, item 5) -------------------------

LAYOUT_TASKS = ("text2music", "retake", "repaint", "extend", "audio2audio", "edit")


def _clip():
    import numpy as np
    import torch

    return torch.from_numpy((0.2 * np.random.default_rng(0).standard_normal((2, 2 * 44100))).astype(np.float32))


def _layout_task(name: str, clip):
    from acestep_app.acestep_v1 import editing

    tasks = {
        "text2music": None,
        "retake": editing.Retake(0.3, seed=2),
        "repaint": editing.Repaint(clip, 44100, 0.5, 1.5, variance=0.7, seed=2),
        "extend": editing.Repaint(clip, 44100, -1.0, 4.0, variance=1.0, seed=2),  # the reference's extend, both sides
        "audio2audio": editing.AudioToAudio(clip, 44100, strength=0.3),
        "edit": editing.FlowEdit(clip, 44100, "jazz", "[verse]\nla", n_min=0.0, n_max=0.5, seed=2),
    }
    return tasks[name]


@pytest.mark.parametrize("batched", [False, True], ids=["sequential", "batched"])
@pytest.mark.parametrize("name", LAYOUT_TASKS)
def test_dit_inputs_have_the_reference_memory_layout(runners, name, batched, monkeypatch):
    """Channels-last where the reference's are (its encoded latents are, and its ops keep it), else contiguous.

    In bfloat16 the layout changes the DiT's output bits, so it is part of the numerics: FlowEdit and
    audio-to-audio run every forward on channels-last latents, repaint and extend only the first
    executed step (the mask merge after it returns a contiguous tensor), text2music and retake none.
    """
    import torch

    from acestep_app.acestep_v1.editing import memory_format_of

    pipeline = runners["sequential"].pipeline_in("bfloat16")
    decode = pipeline.transformer.decode
    calls = []

    def recording_decode(hidden_states, *args, **kwargs):
        calls.append((float(args[3][0]), memory_format_of(hidden_states)))
        return decode(hidden_states, *args, **kwargs)

    monkeypatch.setattr(pipeline.transformer, "decode", recording_decode)
    clip = _clip()
    pipeline(
        "lofi, piano", "[verse]\nla la", duration=2.0, num_inference_steps=4, seed=1, batched_guidance=batched,
        task=_layout_task(name, clip), decode=False,
    )  # fmt: skip
    assert calls
    first_step = calls[0][0]
    channels_last = {
        "text2music": lambda step: False,
        "retake": lambda step: False,
        "repaint": lambda step: step == first_step,
        "extend": lambda step: step == first_step,
        "audio2audio": lambda step: True,
        "edit": lambda step: True,
    }[name]
    expected = [(step, torch.channels_last if channels_last(step) else torch.contiguous_format) for step, _ in calls]
    assert calls == expected


def test_the_documented_command_passes_every_case(lyric_vocab, capsys):
    """docs/fidelity.md's command: every public bf16 case, the editing ones from their stored latents."""
    from acestep_app.cli import main

    code = main(["parity", str(CASES_DIR), "--lyric-vocab", str(lyric_vocab), "--stored-source-latents"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"{len(CASES)} passed, 0 failed"
    assert code == 0


@pytest.mark.parametrize("name", LAYOUT_TASKS)
def test_batched_guidance_is_bit_equal_to_sequential_in_bf16(runners, name):
    """Per item a batched forward rounds as the per-branch forwards do, if the batch keeps the latents' layout.

    The public cases cover text2music, retake and FlowEdit; this covers every task, with double-condition
    guidance (three branches), so a layout lost on the batched path of any task shows as a difference.
    """
    pipeline = runners["sequential"].pipeline_in("bfloat16")
    task = _layout_task(name, _clip())
    finals = [
        pipeline(
            "lofi, piano", "[verse]\nla la", duration=2.0, num_inference_steps=5, seed=1, batched_guidance=batched,
            tag_guidance_scale=5.0, lyric_guidance_scale=1.5, task=task, decode=False,
        ).latents
        for batched in (False, True)
    ]  # fmt: skip
    assert finals[0].dtype == finals[1].dtype == pipeline.dtype
    assert (finals[0] != finals[1]).sum().item() == 0
