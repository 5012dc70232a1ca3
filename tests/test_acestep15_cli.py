"""``acestep-app generate --model acestep-1.5`` and ``weights make-tiny --family acestep-1.5`` on the tiny checkpoint.

The generate test is the issue's acceptance check: the CLI writes what diffusers' own
``AceStepPipeline.from_pretrained(DIR)(...)`` returns with every other argument at its default, for a
checkpoint in either layout. The WAV is float32 (as fal writes it), so equal means bit-equal; both
runs use this process's torch threads (the engine sets one thread for a tiny model before either runs).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch

from acestep_app.acestep_15.tiny import DIFFUSERS_FOLDER
from acestep_app.cli import main

CAPTION = "dreamy synth-pop with a bright female vocal"
LYRICS = "[verse]\nneon rivers in the night\n[chorus]\nhold on, hold on"


@pytest.fixture
def quiet_weights(tmp_path, monkeypatch):
    """No pulled weights anywhere: nothing is downloaded, the song writer falls back."""
    monkeypatch.setenv("ACESTEP_WEIGHTS_DIR", str(tmp_path / "weights"))


@pytest.mark.parametrize("layout", ["official", "diffusers"])
def test_generate_writes_what_diffusers_renders(tiny15_checkpoint, tmp_path, layout, quiet_weights, capsys):
    from diffusers import AceStepPipeline

    weights = tiny15_checkpoint if layout == "official" else tiny15_checkpoint / DIFFUSERS_FOLDER
    output = tmp_path / "out.wav"
    code = main(["generate", "--model", "acestep-1.5", "--weights", str(weights), "--no-thinking", "--lyrics", LYRICS,
                 "--duration", "1.5", "--steps", "3", "--seed", "42", "-o", str(output), "--json", CAPTION])
    assert code == 0
    body = json.loads(capsys.readouterr().out)
    assert body["seed"] == 42 and body["lyrics"] == LYRICS and body["prompt"] == CAPTION
    written, rate = soundfile.read(output, dtype="float32", always_2d=True)
    pipeline = AceStepPipeline.from_pretrained(tiny15_checkpoint / DIFFUSERS_FOLDER)
    expected = pipeline(prompt=CAPTION, lyrics=LYRICS, audio_duration=1.5, num_inference_steps=3,
                        generator=torch.Generator("cpu").manual_seed(42)).audios[0].numpy()
    assert rate == pipeline.sample_rate
    assert np.array_equal(written.T, expected)


def test_generate_refuses_options_the_family_has_not(tiny15_checkpoint, tmp_path, quiet_weights, capsys):
    common = ["generate", "--model", "acestep-1.5", "--weights", str(tiny15_checkpoint), "-o", str(tmp_path / "x.wav")]
    assert main([*common, "--tags", "pop"]) == 2
    assert "--tags: is an option of acestep-v1 only" in capsys.readouterr().err
    assert main([*common, "--scheduler", "heun", "x"]) == 2
    assert "--scheduler: is an option of acestep-v1 only" in capsys.readouterr().err
    assert main([*common, "--key-scale", "H major", "x"]) == 2
    assert "key_scale" in capsys.readouterr().err
    assert main(["generate", "--shift", "2", "-o", str(tmp_path / "v1.wav"), "x"]) == 2  # the v1 default family
    assert "--shift: is not an option of acestep-v1" in capsys.readouterr().err


def test_thinking_runs_the_planner_on_the_demo(tiny15_checkpoint, tmp_path, quiet_weights, capsys):
    output = tmp_path / "planned.wav"
    assert main(["generate", "--model", "acestep-1.5", "--weights", str(tiny15_checkpoint), "--thinking",
                 "--lyrics", LYRICS, "--duration", "1", "--steps", "2", "--seed", "3", "-o", str(output), "--json",
                 CAPTION]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["audio_code_count"] == 5 and "audio_codes" in body["planned"]
    # 5 codes -> 25 latents of 1920 samples: exactly 48000 samples; approx only for the float division
    assert soundfile.info(output).duration == pytest.approx(1.0)


def test_make_tiny_writes_the_family_checkpoint(tmp_path, capsys):
    assert main(["weights", "make-tiny", "--family", "acestep-1.5", str(tmp_path / "tiny")]) == 0
    assert "acestep-1.5" in capsys.readouterr().out
    assert (tmp_path / "tiny" / "acestep-v15-turbo" / "model.safetensors").is_file()
    assert (tmp_path / "tiny" / DIFFUSERS_FOLDER / "model_index.json").is_file()


def test_a_fresh_machine_generates_from_the_tiny_demo_and_says_it_is_noise(tmp_path, quiet_weights, capsys):
    output = tmp_path / "song.wav"
    assert main(["generate", "--model", "acestep-1.5", "--duration", "1", "--steps", "2", "-o", str(output),
                 "a calm piano piece"]) == 0
    assert "the audio is noise" in capsys.readouterr().err
    assert (tmp_path / "tiny" / "acestep-1.5" / "acestep-v15-turbo").is_dir()  # written beside the weights cache
    assert soundfile.info(output).samplerate == 48000
