"""`acestep-app edit`, `inpaint` and `outpaint` on a synthesised clip and the tiny checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from acestep_app.cli import build_parser, main
from acestep_app.acestep_v1.schema import AudioInpaintInput, AudioOutpaintInput, AudioToAudioInput

CLIP_SECONDS = 3.0
FAST = ["--steps", "3", "--seed", "7"]


@pytest.fixture(scope="module")
def checkpoint(tiny_weights):
    return tiny_weights


def write_clip(path, seconds: float = CLIP_SECONDS, rate: int = 44100, channels: int = 2):
    t = np.arange(int(seconds * rate)) / rate
    samples = np.stack([0.4 * np.sin(2 * np.pi * (330 + 55 * c) * t) for c in range(channels)], axis=1)
    soundfile.write(path, samples.astype(np.float32), rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "song.wav")


def subcommand(name):
    return build_parser()._subparsers._group_actions[0].choices[name]


@pytest.mark.parametrize(("name", "model"), [
    ("edit", AudioToAudioInput), ("inpaint", AudioInpaintInput), ("outpaint", AudioOutpaintInput)])
def test_every_schema_field_is_an_option(name, model):
    dests = {action.dest for action in subcommand(name)._actions}
    assert set(model.model_fields) - {"audio_url"} <= dests  # the song file is the audio_url


@pytest.mark.parametrize(("argv", "field"), [
    (["edit", "{clip}", "--tags", "x", "--mode", "retake"], "edit_mode"),
    (["edit", "{clip}", "--tags", "x", "--steps", "2"], "number_of_steps"),
    (["inpaint", "{clip}", "--start", "-1"], "start_time"),
    (["inpaint", "{clip}", "--variance", "2"], "variance"),
    (["inpaint", "{clip}", "--end-from", "middle"], "end_time_relative_to"),
    (["outpaint", "{clip}", "--after", "241"], "extend_after_duration"),
    (["outpaint", "{missing}"], "song"),
])
def test_bad_input_names_the_field_before_loading_a_model(argv, field, clip, tmp_path, capsys):
    argv = [part.format(clip=clip, missing=tmp_path / "absent.wav") for part in argv]
    assert main([*argv, "--weights", str(tmp_path / "no-model-here")]) == 2
    assert field in capsys.readouterr().err


@pytest.mark.parametrize(("channels", "message"), [(6, "6 channels"), (2, "at most 1.5 s")])
def test_bad_songs_are_refused_with_fal_error_types(channels, message, tmp_path, capsys):
    song = write_clip(tmp_path / "bad.wav", seconds=2.0, channels=channels)
    infra = tmp_path / "infra.toml"
    infra.write_text("[audio_input]\nmax_duration_seconds = 1.5\n")
    assert main(["outpaint", str(song), "--infra", str(infra), "-o", str(tmp_path / "o.wav")]) == 2
    err = capsys.readouterr().err
    assert "song:" in err and message in err


def run_json(argv, capsys) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def assert_audio(path, seconds: float):
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels) == (48000, 2)
    assert abs(info.duration - seconds) < 0.2  # the ~93 ms latent grid


def test_edit_remix_keeps_the_length(checkpoint, clip, tmp_path, capsys):
    out = tmp_path / "remix.wav"
    body = run_json(["edit", str(clip), "--mode", "remix", "--tags", "jazz, piano", "--original-tags", "sine, test",
                     "--weights", str(checkpoint), *FAST, "-o", str(out)], capsys)
    assert (body["tags"], body["seed"]) == ("jazz, piano", 7)
    assert_audio(out, CLIP_SECONDS)


def test_edit_lyrics_mode(checkpoint, clip, tmp_path, capsys):
    out = tmp_path / "lyrics.flac"
    body = run_json(["edit", str(clip), "--mode", "lyrics", "--tags", "pop", "--lyrics", "[verse]\nla la",
                     "--original-lyrics", "[verse]\nna na", "--weights", str(checkpoint), *FAST, "-o", str(out)],
                    capsys)
    assert body["lyrics"] == "[verse]\nla la"
    assert_audio(out, CLIP_SECONDS)


def test_inpaint_keeps_the_length(checkpoint, clip, tmp_path, capsys):
    out = tmp_path / "inpainted.wav"
    run_json(["inpaint", str(clip), "--start", "1", "--end", "2", "--tags", "lofi", "--weights", str(checkpoint),
              *FAST, "-o", str(out)], capsys)
    assert_audio(out, CLIP_SECONDS)


def test_outpaint_adds_the_extensions(checkpoint, clip, tmp_path, capsys):
    out = tmp_path / "outpainted.wav"
    run_json(["outpaint", str(clip), "--after", "2", "--before", "1", "--tags", "lofi",
              "--weights", str(checkpoint), *FAST, "-o", str(out)], capsys)
    assert_audio(out, CLIP_SECONDS + 3)


def test_serve_allow_private_urls_switch():
    from acestep_app.cli.serve import allow_private_urls
    from acestep_app.settings import Settings

    args = build_parser().parse_args(["serve", "--allow-private-urls"])
    assert allow_private_urls(Settings(), args.allow_private_urls).security.allow_private_urls is True
    plain = build_parser().parse_args(["serve"])
    assert allow_private_urls(Settings(), plain.allow_private_urls) == Settings()
