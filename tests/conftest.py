"""Shared test fixtures: paths into ../shared (the spec data and the reference parity fixtures).

The shared folder sits beside the project root (CI has it too). A missing fixture is a failure,
never a skip: parity is the product.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from acestep_app.engine.cpu_kernels import pin_reference_cpu_kernels

# Before any test runs a kernel: the bfloat16 parity tests need the reference's oneDNN and MKL kernels,
# and both libraries read their caps once per process (float32 results are unaffected).
pin_reference_cpu_kernels()

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("ACESTEP_SHARED_DIR", PROJECT_ROOT.parent / "shared"))
TINY_DIR = SHARED_DIR / "fixtures" / "acestep-v1-tiny"
TINY_BF16_DIR = SHARED_DIR / "fixtures" / "acestep-v1-tiny-bf16"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"required shared fixture missing: {path} (set ACESTEP_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED_DIR)


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """The reference-made tiny random checkpoint in the official folder layout."""
    return _require(TINY_DIR / "checkpoint")


@pytest.fixture(scope="session")
def tiny15_checkpoint(tmp_path_factory) -> Path:
    """A tiny random ACE-Step 1.5 checkpoint: official layout at the root, diffusers layout in ``diffusers/``."""
    from acestep_app.acestep_15.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("acestep15") / "tiny")


@pytest.fixture(scope="session")
def cases_dir() -> Path:
    """Reference input/output cases for the tiny checkpoint (see its README)."""
    return _require(TINY_DIR / "cases")


@pytest.fixture(scope="session")
def lyric_vocab() -> Path:
    """The lyric tokenizer's vocabulary (upstream vocab.json), used from ../shared in tests."""
    return _require(SHARED_DIR / "spec" / "lyrics_vocab.json")


# -- the one poller, the tiny infra and the tiny engine --------------------------------------------


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.02):
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not reached in {timeout}s (last value: {value!r})")


def toml_value(value) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # strings, numbers and lists of them are valid TOML as JSON writes them


def write_infra(path: Path, **sections: dict) -> Path:
    """The repository's infra.toml with ``sections``' keys overridden (e.g. ``engine={"device": "cpu"}``)."""
    from acestep_app.settings import REPO_INFRA_PATH, Settings

    data = Settings.load(REPO_INFRA_PATH).model_dump()
    for section, values in sections.items():
        data[section].update(values)
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items() if not isinstance(value, dict))
        for key, table in values.items():  # [models."<family>"] tables
            if isinstance(table, dict):
                lines.append(f'[{section}."{key}"]')
                lines.extend(f"{name} = {toml_value(value)}" for name, value in table.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert Settings.load(path).model_dump() == data
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny random checkpoint in the official layout (with the lyric vocabulary), written once."""
    from acestep_app.acestep_v1.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-weights"))


@pytest.fixture(scope="session", autouse=True)
def background_soak(request, tmp_path_factory):
    """When the session selected the soak (tests/test_soak.py), starts it in its own process at once:
    its 3 minutes of load overlap the rest of the suite. Yields (process, workdir); stops it at the end."""
    if not any(item.path.name == "test_soak.py" for item in request.session.items):
        yield None
        return
    from test_soak import start_in_background, stop_soak

    workdir = tmp_path_factory.mktemp("soak")
    process = start_in_background(workdir, request.getfixturevalue("tiny_weights"))
    yield process, workdir
    stop_soak(process)  # when the session ended first (-x, an interrupt): nothing keeps running


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen3 with a small byte-level BPE tokenizer (the song writer's local LLM), written once."""
    from acestep_app.songwriter.tiny_llm import write_tiny_llm

    return write_tiny_llm(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> Path:
    """A tiny random Whisper (the takes' transcriber), written once."""
    from tiny_whisper import write_tiny_whisper

    return write_tiny_whisper(tmp_path_factory.mktemp("whisper"))


@pytest.fixture(scope="session")
def tiny_planner_lm(tmp_path_factory) -> Path:
    """A tiny random ACE-Step 1.5 5 Hz LM (Qwen3 with audio-code tokens), written once."""
    from acestep_app.acestep_15.planner.tiny import write_tiny_planner_lm

    return write_tiny_planner_lm(tmp_path_factory.mktemp("tiny-planner-lm"))


@pytest.fixture(scope="session")
def tiny_infra(tiny_weights, tmp_path_factory) -> Path:
    """An infra.toml that loads ``tiny_weights`` on the CPU with the fallback prompt writer."""
    engine = {"weights_dir": str(tiny_weights), "device": "cpu", "prompt_backend": "fallback"}
    return write_infra(tmp_path_factory.mktemp("tiny-infra") / "infra.toml", engine=engine)


@pytest.fixture(scope="session")
def tiny_engine(tiny_infra):
    """The real Engine on ``tiny_weights`` (loaded once per session)."""
    from acestep_app.acestep_v1.engine import Engine
    from acestep_app.settings import Settings

    return Engine.load(Settings.load(tiny_infra))


@pytest.fixture
def fixed_seeds(monkeypatch):
    """Seeds the engine draws for unseeded requests (and extra takes) come out 1, 2, 3, ... in order.

    A test that compares numbers of an unseeded request uses this, so every run compares the same
    numbers (a seed drawn at random makes a tolerance pass or fail by chance).
    """
    import itertools

    from acestep_app.acestep_v1 import pipeline

    counter = itertools.count(1)
    monkeypatch.setattr(pipeline, "random_seed", lambda: next(counter))


@pytest.fixture
def loopback_only_dns(monkeypatch):
    """Outbound-URL guard sees no DNS: names do not resolve, and only loopback IP literals do.

    Fuzzed URLs (``http://8.8.8.8/``, ``https://example.com/``) then fail inside the guard, never on
    the wire: the tests send nothing to any non-loopback address.
    """
    import ipaddress
    import socket

    from acestep_app.audio import netguard

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        try:
            address = ipaddress.ip_address(str(host).strip("[]").split("%")[0])
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "name resolution is off in this test") from None
        if not (address.is_loopback or getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback):
            raise socket.gaierror(socket.EAI_NONAME, "only loopback addresses in this test")
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(netguard.socket, "getaddrinfo", getaddrinfo)


PLAYS_PUBLIC = "127.0.0.2"  # a loopback address the public_loopback fixture lets count as public


@pytest.fixture
def public_loopback(monkeypatch):
    """127.0.0.2 counts as a public address (the guard's rule is unchanged for every other address)."""
    import ipaddress

    from acestep_app.audio import netguard

    plays_public = ipaddress.ip_address(PLAYS_PUBLIC)
    real_rule = netguard.refusal_reason

    def rule(address, *, allow_private):
        return None if address == plays_public else real_rule(address, allow_private=allow_private)

    monkeypatch.setattr(netguard, "refusal_reason", rule)


@pytest.fixture(scope="session")
def transformer_dir(tiny_checkpoint) -> Path:
    """The tiny checkpoint's DiT folder."""
    return tiny_checkpoint / "ace_step_transformer"


def encode_forward_case(model, cases_dir: Path):
    """The reference transformer_forward case's inputs, its text and lyrics encoded by ``model``:
    ``(latent, attention_mask, encoder_states, encoder_mask, timestep)``."""
    import torch
    from safetensors.torch import load_file

    case = load_file(cases_dir / "transformer_forward.safetensors")
    with torch.no_grad():
        states, mask = model.encode(
            case["encoder_text_hidden_states"], case["text_attention_mask"], case["speaker_embeds"],
            case["lyric_token_idx"], case["lyric_mask"],
        )
    return case["latent"], case["attention_mask"], states, mask, case["timestep"]
