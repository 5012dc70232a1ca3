"""LoRA on ACE-Step v1: reference parity, switching between requests, errors, deploy-time adapters."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from acestep_app.acestep_v1.engine import Engine
from acestep_app.acestep_v1.lora import NO_ADAPTERS, AdapterUse, MergedAdapters, MergePlan, plan_merge
from acestep_app.acestep_v1.schema import TextToAudioInput
from acestep_app.cli import main
from acestep_app.errors import LoraError, WeightsError
from acestep_app.lora.adapter import find_weights_file, load_adapter
from acestep_app.lora.schema import with_loras
from acestep_app.settings import Settings
from conftest import SHARED_DIR
from local_http import LocalServer, body_route
from lora_files import adapter_tensors, write_adapter

LORA_FIXTURE = SHARED_DIR / "fixtures" / "acestep-v1-tiny-lora"
ADAPTER_A = LORA_FIXTURE / "adapters" / "lora_a_r4_a8_rslora_all"
ADAPTER_B = LORA_FIXTURE / "adapters" / "lora_b_r2_a2_attn"
Request = with_loras(TextToAudioInput)


@pytest.mark.parametrize("batched", [False, True])
def test_parity_on_the_lora_fixture_cases(lyric_vocab, capsys, batched):
    """`acestep-app parity .../acestep-v1-tiny-lora/cases` as the issue runs it, plain and --batched."""
    cases = LORA_FIXTURE / "cases"
    code = main(["parity", str(cases), "--lyric-vocab", str(lyric_vocab), *(["--batched"] if batched else [])])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"{len(list(cases.glob('*.json')))} passed, 0 failed", lines
    assert code == 0


def test_the_runner_merges_every_adapted_layer_and_undoes_it(tiny_checkpoint, lyric_vocab):
    import json

    from acestep_app.devtools.parity.cases import ParityRunner

    case = json.loads((LORA_FIXTURE / "cases" / "lora_a_s1_euler_apg.json").read_text())
    runner = ParityRunner(tiny_checkpoint, lyric_vocab)
    runner.case_dir = LORA_FIXTURE / "cases"
    runner.use_lora(None)
    transformer = runner.pipeline.transformer
    base = {name: p.clone() for name, p in transformer.named_parameters()}
    runner.use_lora(case["lora"])
    changed = [name for name, p in transformer.named_parameters() if not torch.equal(p, base[name])]
    assert len(changed) == 217  # every adapted Linear weight (the adapter has no biases)
    runner.use_lora(None)
    assert all(torch.equal(p, base[name]) for name, p in transformer.named_parameters())


@pytest.fixture(scope="module")
def adapter_server(tmp_path_factory):
    """The fixture adapters served over HTTP (requests may not name local paths)."""
    routes = {f"/{folder.name}.safetensors": body_route(find_weights_file(folder).read_bytes())
              for folder in (ADAPTER_A, ADAPTER_B)}
    broken = tmp_path_factory.mktemp("misfit")
    write_adapter(broken, adapter_tensors({"transformer_blocks.0.attn.to_q": (7, 32)}))
    routes["/misfit.safetensors"] = body_route(find_weights_file(broken).read_bytes())
    write_adapter(broken / "alien", adapter_tensors({"decoder.layers.0.self_attn.q_proj": (32, 32)}))
    routes["/alien.safetensors"] = body_route(find_weights_file(broken / "alien").read_bytes())
    with LocalServer(routes) as server:
        yield server


def lora_settings(tiny_checkpoint, lyric_vocab, tmp_path, **lora) -> Settings:
    return Settings.from_dict({
        "engine": {"weights_dir": str(tiny_checkpoint), "lyric_vocab": str(lyric_vocab), "device": "cpu",
                   "prompt_backend": "fallback", "threads": 1},
        "lora": {"per_request": True, "cache_dir": str(tmp_path / "loras"), **lora},
        "security": {"allow_private_urls": True},
    })


def request(server, *adapters) -> TextToAudioInput:
    loras = [{"path": server.url(f"/{name}.safetensors"), "scale": scale} for name, scale in adapters]
    return Request(tags="funk, pop", lyrics="[verse]\nla la la", duration=5, number_of_steps=3, seed=11, loras=loras)


A = ("lora_a_r4_a8_rslora_all", 1.0)
B = ("lora_b_r2_a2_attn", -1.0)


@pytest.fixture(scope="module")
def engine_factory(tiny_checkpoint, lyric_vocab, tmp_path_factory):
    def make(**lora) -> Engine:
        return Engine.load(lora_settings(tiny_checkpoint, lyric_vocab, tmp_path_factory.mktemp("e"), **lora))

    return make


def test_switching_a_b_none_equals_fresh_runs(engine_factory, adapter_server):
    """Requests never mix: A, then B, then none, on one engine equal each on a fresh engine, bit for bit."""
    engine = engine_factory()
    sequence = [engine.generate(request(adapter_server, *adapters)).waveform
                for adapters in ([A], [B], [], [A, B])]
    fresh = [engine_factory().generate(request(adapter_server, *adapters)).waveform
             for adapters in ([A], [B], [], [A, B])]
    for ours, theirs in zip(sequence, fresh):
        assert np.array_equal(ours, theirs)
    # and the adapters do change the output (the tiny vocoder hardly reacts: compare exactly)
    assert not np.array_equal(sequence[0], sequence[2]) and not np.array_equal(sequence[1], sequence[2])


def test_the_same_adapters_twice_cost_no_switch(engine_factory, adapter_server):
    engine = engine_factory()
    first = engine.generate(request(adapter_server, A))
    second = engine.generate(request(adapter_server, A))
    assert first.timings["lora"] > 0 and second.timings["lora"] == 0.0
    assert np.array_equal(first.waveform, second.waveform)
    assert any(line.startswith("LoRA loras[0] @ 1: 217 layers, rank 4") for line in first.logs)
    assert engine.describe()["loras"]["active"] == [f"{first_sha(engine)} @ 1"]


def first_sha(engine) -> str:
    return engine.loras.merged.key[1][0][:12]


def test_deploy_time_adapters_equal_the_same_adapter_per_request(engine_factory, adapter_server):
    deployed = engine_factory(adapters=[{"path": str(ADAPTER_A), "scale": 1.0}], per_request=False)
    per_request = engine_factory()
    plain = TextToAudioInput(**request(adapter_server).model_dump(exclude={"loras"}))
    assert np.array_equal(deployed.generate(plain).waveform, per_request.generate(request(adapter_server, A)).waveform)
    assert deployed.describe()["loras"]["deploy"][0].startswith(f"{ADAPTER_A} @ 1: 217 layers")


def test_a_deploy_time_adapter_that_does_not_fit_stops_the_load(engine_factory, tmp_path):
    write_adapter(tmp_path / "misfit", adapter_tensors({"transformer_blocks.0.attn.to_q": (7, 32)}))
    with pytest.raises(WeightsError, match=r"\[\[lora.adapters\]\] path = .*misfit.*adapter 7x32, model 32x32"):
        engine_factory(adapters=[{"path": str(tmp_path / "misfit")}])
    # adapters for another family are not this engine's business
    assert engine_factory(adapters=[{"path": str(tmp_path / "misfit"), "model": "acestep-1.5"}])


@pytest.mark.parametrize(("name", "message"), [
    ("misfit", "does not fit the ACE-Step v1 transformer: transformer_blocks.0.attn.to_q (adapter 7x32, model 32x32)"),
    ("alien", "no Linear layer of that name"),
    ("absent", "HTTP 404"),
])
def test_adapters_that_do_not_fit_are_422s_naming_the_entry_and_leave_the_model_alone(
        engine_factory, adapter_server, name, message):
    engine = engine_factory()
    before = engine.generate(request(adapter_server)).waveform
    with pytest.raises(LoraError, match=re.escape(message)) as caught:
        engine.generate(request(adapter_server, A, (name, 1.0)))
    assert caught.value.detail()["loc"] == ["body", "loras", 1, "path"] and caught.value.status_code == 422
    assert np.array_equal(engine.generate(request(adapter_server)).waveform, before)


def test_a_merge_that_fails_part_way_restores_every_layer(tiny_checkpoint):
    from acestep_app.acestep_v1.models.transformer import ACEStepTransformer2DModel

    transformer = ACEStepTransformer2DModel.from_pretrained(tiny_checkpoint / "ace_step_transformer")
    adapter = load_adapter(find_weights_file(ADAPTER_B), "b")
    merged = MergedAdapters(transformer)
    merged.use(plan_merge(transformer, [AdapterUse(adapter, 1.0)], "reference"))
    with_b = {name: p.clone() for name, p in transformer.named_parameters()}

    class Exploding(torch.Tensor):
        def to(self, *args, **kwargs):
            raise RuntimeError("out of memory (simulated)")

    good = plan_merge(transformer, [AdapterUse(load_adapter(find_weights_file(ADAPTER_A), "a"), 0.5)], "reference")
    names = list(good.terms)
    up, down, bias, factor = good.terms[names[1]][0]
    terms = {**good.terms, names[1]: [(up.as_subclass(Exploding), down, bias, factor)]}
    with pytest.raises(RuntimeError, match="simulated"):
        merged.use(MergePlan(key=("reference", ("a", 0.5)), terms=terms))
    merged.use(NO_ADAPTERS)  # the failed switch left the base model: nothing merged, nothing to undo
    base = ACEStepTransformer2DModel.from_pretrained(tiny_checkpoint / "ace_step_transformer")
    assert all(torch.equal(p, q) for p, q in zip(transformer.parameters(), base.parameters()))
    assert merged.key == () and any(not torch.equal(with_b[n], p) for n, p in transformer.named_parameters())


@pytest.fixture(scope="module")
def cli_infra(tiny_checkpoint, lyric_vocab, tmp_path_factory):
    from conftest import write_infra

    engine = {"weights_dir": str(tiny_checkpoint), "lyric_vocab": str(lyric_vocab), "device": "cpu",
              "prompt_backend": "fallback", "threads": 1}
    return write_infra(tmp_path_factory.mktemp("cli") / "infra.toml", engine=engine)


@pytest.mark.parametrize(("text", "parsed"), [
    ("me/lora", ("me/lora", 1.0)), ("me/lora:0.5", ("me/lora", 0.5)), ("./x:-1", ("./x", -1.0)),
    ("https://h/x.safetensors", ("https://h/x.safetensors", 1.0)), ("https://h/x.safetensors:2", ("https://h/x.safetensors", 2.0)),
    ("rapmachine:0.7", ("rapmachine", 0.7)),
])
def test_the_lora_option_reads_a_trailing_scale(text, parsed):
    from acestep_app.cli.common import lora_option

    assert lora_option(text) == parsed


def test_generate_with_lora_equals_the_per_request_adapter(cli_infra, engine_factory, adapter_server, tmp_path):
    import soundfile

    argv = ["generate", "--tags", "funk, pop", "--lyrics", "[verse]\nla la la", "--duration", "5", "--steps", "3",
            "--seed", "11", "--infra", str(cli_infra), "-o"]
    assert main([*argv, str(tmp_path / "lora.wav"), "--lora", f"{ADAPTER_A}:1", "--lora", f"{ADAPTER_B}:-1"]) == 0
    ours, _ = soundfile.read(tmp_path / "lora.wav", dtype="float32", always_2d=True)
    expected = engine_factory().generate(request(adapter_server, A, B)).waveform
    assert np.array_equal(ours.T, expected)  # float32 WAV round-trips exactly


def test_editing_commands_take_lora_and_a_bad_one_stops_them(cli_infra, tmp_path, capsys):
    import soundfile

    from test_cli_editing import write_clip

    clip = write_clip(tmp_path / "song.wav")
    argv = ["inpaint", str(clip), "--tags", "funk", "--start", "0.5", "--end", "1.5", "--steps", "3", "--seed", "7",
            "--infra", str(cli_infra), "-o"]
    assert main([*argv, str(tmp_path / "plain.wav")]) == 0
    assert main([*argv, str(tmp_path / "lora.wav"), "--lora", str(ADAPTER_A)]) == 0
    plain, lora = (soundfile.read(tmp_path / f"{name}.wav", dtype="float32")[0] for name in ("plain", "lora"))
    assert plain.shape == lora.shape and not np.array_equal(plain, lora)
    write_adapter(tmp_path / "misfit", adapter_tensors({"speaker_embedder": (31, 512)}))
    assert main([*argv, str(tmp_path / "x.wav"), "--lora", str(tmp_path / "misfit")]) == 1
    assert not (tmp_path / "x.wav").exists()


def test_the_switch_bench_runs_and_restores_the_base_weights():
    """bench/lora_switch.py on a one-block mid-size DiT (the documented commands run the same code)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "bench/lora_switch.py", "--layers", "1", "--rank", "8", "--duration", "1",
                           "--steps", "2", "--repeats", "1"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert [line.split()[1:4] for line in lines if line.strip().startswith("switch")] == [
        ["none", "->", "A"], ["A", "->", "B"], ["B", "->", "none"], ["A", "->", "A"]]
    assert "weights after B -> none bit-identical to the base model: True" in done.stdout
