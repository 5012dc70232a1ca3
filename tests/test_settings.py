"""infra.toml loader: precedence, defaults, key and type errors that name the key."""

from __future__ import annotations

import pickle
import tomllib

import pytest

from acestep_app import settings as settings_module
from acestep_app.engine.family import all_families
from acestep_app.settings import INFRA_ENV, REPO_INFRA_PATH, Settings, SettingsError


def test_shipped_infra_toml_loads_and_lists_every_setting(monkeypatch):
    monkeypatch.delenv(INFRA_ENV, raising=False)
    loaded = Settings.load()
    assert loaded.app.price_per_second_usd == 0.0002
    assert loaded.weights.repo == "ACE-Step/ACE-Step-v1-3.5B"
    assert loaded.weights.revision == "82cd0d7b6322bd28cd4e830fe675ddb6180ce36c"
    assert loaded.fal.machine_type == "GPU-H100" and loaded.fal.num_gpus == 1 and loaded.fal.app_auth == "private"
    assert loaded.modal.gpu == "H100"
    assert loaded.engine.device == "auto" and loaded.engine.dtype == "auto"
    assert loaded.engine.batched_guidance is True and loaded.engine.compile is False
    # The file documents every key the loader knows, so teams see all the knobs in one place.
    data = tomllib.loads(REPO_INFRA_PATH.read_text(encoding="utf-8"))
    family_sections = data.pop("models", {})
    defaults = Settings().model_dump()
    defaults.pop("models")
    assert {section: set(values) for section, values in data.items()} == {
        section: set(values) for section, values in defaults.items()
    }
    # and every family with settings of its own has its [models."<name>"] section, every key listed
    for family in all_families():
        if family.settings_model is not None:
            assert set(family_sections[family.name]) == set(family.settings_model.model_fields), family.name


def test_env_overrides_the_repository_file(tmp_path, monkeypatch):
    custom = tmp_path / "infra.toml"
    custom.write_text('[engine]\ndevice = "cpu"\ncompile = true\n[fal]\nmachine_type = ["GPU-H100", "GPU-A100"]\n')
    monkeypatch.setenv(INFRA_ENV, str(custom))
    loaded = Settings.load()
    assert loaded.engine.device == "cpu" and loaded.engine.compile is True
    assert loaded.fal.machine_type == ["GPU-H100", "GPU-A100"]
    assert loaded.app == Settings().app  # missing sections and keys keep their defaults
    assert Settings.load(REPO_INFRA_PATH).engine.device == "auto"  # an explicit path wins over the env


def test_missing_file_falls_back_to_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv(INFRA_ENV, raising=False)
    monkeypatch.setattr(settings_module, "REPO_INFRA_PATH", tmp_path / "absent.toml")
    assert Settings.load() == Settings()
    with pytest.raises(SettingsError, match="absent.toml"):
        Settings.load(tmp_path / "absent.toml")  # but a file asked for by name must exist


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[engine]\nprompt_model = 'x'\n", r"\[engine\] prompt_model: unknown key"),
        ("[engine]\nprompt_backend = 'x'\n", r"\[engine\] prompt_backend"),
        ("[gpu]\ntype = 'H100'\n", r"\[gpu\]: unknown section"),
        ("[fal]\nnum_gpus = '2'\n", r"\[fal\] num_gpus: Input should be a valid integer"),
        ("[engine]\ncompile = 1\n", r"\[engine\] compile: Input should be a valid boolean"),
        ("[engine]\ndtype = 'int8'\n", r"\[engine\] dtype"),
        ("[engine]\ndevice = 'tpu'\n", r"\[engine\] device"),
        ("[app]\nprice_per_second_usd = -1.0\n", r"\[app\] price_per_second_usd"),
        ("[app]\nprice_per_second_usd = nan\n", r"\[app\] price_per_second_usd"),
        ("[weights]\nrevision = 'main'\n", r"\[weights\] revision"),
        ("[fal]\napp_auth = 'open'\n", r"\[fal\] app_auth"),
        ("[modal]\ntimeout = 0\n", r"\[modal\] timeout"),
        ("[security]\nallow_private_urls = 'yes'\n", r"\[security\] allow_private_urls"),
        ("[audio_input]\nmax_redirects = -1\n", r"\[audio_input\] max_redirects"),
        ("[audio_input]\nmin_duration_seconds = 300.0\n", r"\[audio_input\]: .*min_duration_seconds"),
        ("[engine\n", "invalid TOML"),
    ],
)
def test_errors_name_the_key(text, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_toml(text, source="test.toml")


def test_settings_are_frozen_picklable_values():
    loaded = Settings.from_toml("[app]\nprice_per_second_usd = 1\n")
    assert loaded.app.price_per_second_usd == 1.0  # an integer is fine for a float key
    assert pickle.loads(pickle.dumps(loaded)) == loaded
    with pytest.raises(Exception):
        loaded.app.name = "other"


def test_private_urls_are_refused_unless_allowed():
    assert Settings().security.allow_private_urls is False
    assert Settings.from_toml("[security]\nallow_private_urls = true\n").security.allow_private_urls is True


def test_default_editing_body_limit_admits_a_minute_of_cd_audio_as_a_data_uri():
    wav_bytes = 44 + 60 * 44100 * 2 * 2  # 60 s, 44.1 kHz, 16-bit, stereo
    data_uri = len("data:audio/wav;base64,") + 4 * -(-wav_bytes // 3)
    json_overhead = 4096  # the other fields of a request
    assert Settings().audio_input.max_request_bytes >= data_uri + json_overhead
    assert Settings().audio_input.max_duration_seconds >= 60
