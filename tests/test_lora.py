"""The shared adapter machinery (acestep_app/lora/): file checks, scaling rules, sources, the store and its caches."""

from __future__ import annotations

import json
import math

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from acestep_app.errors import LoraError
from acestep_app.lora.adapter import AdapterFormatError, find_weights_file, layer_scalings, load_adapter, read_config_file
from acestep_app.lora.library import AdapterLibrary
from acestep_app.lora.schema import MAX_LORAS, LoraWeight, request_loras, with_loras
from acestep_app.lora.sources import SourceError, parse_source
from acestep_app.acestep_v1.schema import TextToAudioInput
from acestep_app.settings import Settings
from local_http import LocalServer, body_route, declared_huge_route
from lora_files import adapter_tensors, write_adapter

SHAPES = {"blocks.0.attn.to_q": (6, 4), "blocks.0.attn.to_k": (6, 4), "speaker": (6, 5)}


@pytest.fixture(scope="module")
def lora_fixture(shared_dir):
    return shared_dir / "fixtures" / "acestep-v1-tiny-lora"


def settings_for(tmp_path, **lora) -> Settings:
    return Settings.from_dict({"lora": {"cache_dir": str(tmp_path / "cache"), **lora},
                               "security": {"allow_private_urls": True}})


def test_the_fixture_adapter_reads_as_the_reference_wrote_it(lora_fixture):
    folder = lora_fixture / "adapters" / "lora_a_r4_a8_rslora_all"
    adapter = load_adapter(find_weights_file(folder), "x", read_config_file(folder))
    assert len(adapter.layers) == 217  # 24 blocks x 2 attentions x 4 + 8 lyric blocks x 3 + speaker_embedder
    assert {layer.rank for layer in adapter.layers.values()} == {4}
    assert "speaker_embedder" in adapter.layers and "lyric_encoder.encoders.7.self_attn.linear_v" in adapter.layers
    assert adapter.config.source == "safetensors metadata"  # diffusers >= 0.34 writes the LoraConfig in the header
    assert (adapter.config.rank, adapter.config.alpha, adapter.config.use_rslora) == (4, 8, True)
    # reference: alpha inferred = rank, so each layer gets the request's scale; adapter: 8 / sqrt(4) = 4
    assert set(layer_scalings(adapter, 0.5, "reference").values()) == {0.5}
    assert set(layer_scalings(adapter, 0.5, "adapter").values()) == {2.0}


def test_a_header_without_metadata_takes_adapter_config_json(tmp_path, lora_fixture):
    """What diffusers <= 0.33 wrote (mid-2025 LoRAs): the config only in adapter_config.json."""
    source = lora_fixture / "adapters" / "lora_b_r2_a2_attn"
    tensors = adapter_tensors(SHAPES, rank=2)
    folder = write_adapter(tmp_path / "c", tensors, config=json.loads((source / "adapter_config.json").read_text()))
    adapter = load_adapter(find_weights_file(folder), "x", read_config_file(folder))
    assert adapter.config.source == "adapter_config.json" and adapter.config.alpha == 2
    assert set(layer_scalings(adapter, 1.0, "adapter").values()) == {1.0}  # 2 / 2


def test_scaling_rules_with_mixed_ranks_and_per_module_alphas(tmp_path):
    tensors = adapter_tensors({"a": (6, 4), "b": (6, 4)}, rank=4)
    tensors.update(adapter_tensors({"c": (6, 4)}, rank=2, seed=1))
    tensors["b.alpha"] = torch.tensor(16.0)
    config = {"r": 4, "lora_alpha": 8, "use_rslora": False, "alpha_pattern": {"c": 1}}
    adapter = load_adapter(find_weights_file(write_adapter(tmp_path / "m", tensors, config)), "x",
                           read_config_file(tmp_path / "m"))
    # reference: alpha = the most common rank (4) for every layer, r = the layer's own rank
    assert layer_scalings(adapter, 2.0, "reference") == {"a": 2.0, "b": 2.0, "c": 4.0}
    # adapter: lora_alpha / r, a module's .alpha key and alpha_pattern win
    assert layer_scalings(adapter, 2.0, "adapter") == {"a": 4.0, "b": 8.0, "c": 1.0}


def test_rapmachine_plays_at_half_its_trained_strength_in_the_reference(tmp_path):
    """r 256, alpha 32, rsLoRA: trained at 32 / sqrt(256) = 2, the reference applies 1 (docs/lora.md)."""
    tensors = adapter_tensors({"x": (8, 300)}, rank=256)
    config = {"r": 256, "lora_alpha": 32, "use_rslora": True}
    adapter = load_adapter(find_weights_file(write_adapter(tmp_path / "rap", tensors, config)), "x",
                           read_config_file(tmp_path / "rap"))
    assert layer_scalings(adapter, 1.0, "reference") == {"x": 1.0}
    assert layer_scalings(adapter, 1.0, "adapter") == {"x": 2.0}


def bad_files():
    good = adapter_tensors(SHAPES, rank=2)
    nan = dict(good)
    nan["speaker.lora_B.weight"] = torch.full((6, 2), math.nan)
    return {
        "unknown keys": ({**good, "blocks.0.ff.weight": torch.zeros(2)}, "unknown keys"),
        "missing up": ({k: v for k, v in good.items() if k != "speaker.lora_B.weight"}, "lora_B.weight is missing"),
        "rank mismatch": ({**good, "speaker.lora_B.weight": torch.zeros(6, 3)}, "rank mismatch"),
        "conv lora": ({**good, "speaker.lora_A.weight": torch.zeros(2, 5, 1)}, "must be matrices"),
        "integer": ({**good, "speaker.lora_A.weight": torch.zeros(2, 5, dtype=torch.int64)}, "not a float"),
        "nan": (nan, "NaN"),
        "bias shape": ({**good, "speaker.lora_B.bias": torch.zeros(5)}, "lora_B.bias has shape"),
        "empty": ({}, "no tensors"),
    }


@pytest.mark.parametrize("case", list(bad_files()))
def test_bad_adapter_files_are_refused_with_a_reason(tmp_path, case):
    tensors, message = bad_files()[case]
    path = tmp_path / "bad.safetensors"
    save_file(tensors, path)
    with pytest.raises(AdapterFormatError, match=message):
        load_adapter(path, "x")


@pytest.mark.parametrize("data", [b"", b"not a safetensors file at all", b"\xff" * 8 + b"{}", b"\x10\x00" * 4 + b"[1]"])
def test_files_that_are_not_safetensors_are_refused(tmp_path, data):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(data)
    with pytest.raises(AdapterFormatError, match="not a valid safetensors file"):
        load_adapter(path, "x")


def test_prefixed_keys_are_accepted(tmp_path):
    tensors = {f"base_model.model.{key}": value for key, value in adapter_tensors(SHAPES).items()}
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    assert set(load_adapter(tmp_path / "adapter_model.safetensors", "x").layers) == set(SHAPES)


@pytest.mark.parametrize(("text", "kind", "location", "revision", "subpath"), [
    ("https://example.com/a/b.safetensors", "url", "https://example.com/a/b.safetensors", None, ""),
    ("ACE-Step/ACE-Step-v1-chinese-rap-LoRA", "hub", "ACE-Step/ACE-Step-v1-chinese-rap-LoRA", None, ""),
    ("me/my.lora@v1.0", "hub", "me/my.lora", "v1.0", ""),
    ("me/lora@" + "a" * 40 + "/adapters/x.safetensors", "hub", "me/lora", "a" * 40, "adapters/x.safetensors"),
    ("me/lora/sub", "hub", "me/lora", None, "sub"),
])
def test_request_sources(text, kind, location, revision, subpath):
    source = parse_source(text, trusted=False)
    assert (source.kind, source.location, source.revision, source.subpath) == (kind, location, revision, subpath)


@pytest.mark.parametrize("text", ["/etc/passwd", "./adapter", "../x", "~/lora", "file:///etc/passwd", "C:\\lora",
                                  "rapmachine", "no spaces/in repo", "a/b@", "-a/b"])
def test_requests_cannot_name_local_paths_or_pinned_names(text):
    with pytest.raises(SourceError):
        parse_source(text, trusted=False, pinned_names=frozenset({"rapmachine"}))


def test_trusted_callers_may_name_local_paths_and_pinned_adapters(tmp_path):
    assert parse_source(str(tmp_path), trusted=True).kind == "local"
    assert parse_source("rapmachine", trusted=True, pinned_names=frozenset({"rapmachine"})).kind == "pinned"


def test_the_loras_field_has_fal_shape_and_limits():
    model = with_loras(TextToAudioInput)
    assert model.model_json_schema()["title"] == TextToAudioInput.model_json_schema()["title"]
    request = model.model_validate({"tags": "pop", "loras": [{"path": "me/lora"}]})
    assert request_loras(request) == [LoraWeight(path="me/lora", scale=1.0)]
    assert request_loras(TextToAudioInput(tags="pop")) == []
    too_many = [{"path": "me/lora"}] * (MAX_LORAS + 1)
    for bad, where in [({"loras": too_many}, ("loras",)), ({"loras": [{"path": ""}]}, ("loras", 0, "path")),
                       ({"loras": [{"path": "a/b", "scale": 9}]}, ("loras", 0, "scale")),
                       ({"loras": [{"path": "a/b", "scale": float("nan")}]}, ("loras", 0, "scale"))]:
        with pytest.raises(ValidationError) as caught:
            model.model_validate({"tags": "pop", **bad})
        assert caught.value.errors()[0]["loc"] == where
        json.dumps(caught.value.errors(include_url=False), default=str)


def test_a_url_adapter_is_fetched_once_through_the_guard(tmp_path):
    write_adapter(tmp_path / "src", adapter_tensors(SHAPES))
    data = (tmp_path / "src" / "pytorch_lora_weights.safetensors").read_bytes()
    with LocalServer({"/style.safetensors": body_route(data)}) as server:
        library = AdapterLibrary(settings_for(tmp_path))
        first = library.load(server.url("/style.safetensors"), index=0)
        again = AdapterLibrary(settings_for(tmp_path)).load(server.url("/style.safetensors"), index=0)
    assert len(server.requests) == 1  # the second library found it in the on-disk store
    assert first.sha256 == again.sha256 and set(first.layers) == set(SHAPES)
    assert (tmp_path / "cache" / "blobs" / first.sha256 / "style.safetensors").read_bytes() == data


def test_url_refusals_name_the_entry(tmp_path, loopback_only_dns):
    library = AdapterLibrary(settings_for(tmp_path, max_download_bytes=1000))
    with LocalServer({"/huge": declared_huge_route(), "/junk.safetensors": body_route(b"junk" * 10)}) as server:
        for url, error_type, message in [
            (server.url("/huge"), "file_too_large", "larger than the 1000 bytes"),
            (server.url("/missing"), "file_download_error", "HTTP 404"),
            (server.url("/junk.safetensors"), "validation_error", "not a valid safetensors file"),
            ("https://example.com/a.safetensors", "file_download_error", "Failed to download"),
        ]:
            with pytest.raises(LoraError, match=message) as caught:
                library.load(url, index=2)
            assert caught.value.detail()["loc"] == ["body", "loras", 2, "path"]
            assert caught.value.error_type == error_type


def test_private_addresses_are_refused_unless_allowed(tmp_path):
    settings = Settings.from_dict({"lora": {"cache_dir": str(tmp_path)}})
    with pytest.raises(LoraError, match="Failed to download") as caught:
        AdapterLibrary(settings).load("http://127.0.0.1:9/a.safetensors", index=0)
    assert caught.value.error_type == "file_download_error"


class FakeHub:
    """The two Hub routes the library uses: the repo listing at a revision, and file downloads."""

    COMMIT = "c" * 40

    def __init__(self, repo: str, files: dict[str, bytes]):
        self.repo, self.files = repo, files

    def routes(self) -> dict:
        siblings = [{"rfilename": name, "size": len(data)} for name, data in self.files.items()]
        listing = json.dumps({"id": self.repo, "sha": self.COMMIT, "siblings": siblings}).encode()
        routes = {path: body_route(listing, "application/json")
                  for path in (f"/api/models/{self.repo}", f"/api/models/{self.repo}/revision/v2")}
        for name, data in self.files.items():
            routes[f"/{self.repo}/resolve/{self.COMMIT}/{name}"] = body_route(data)
        return routes


def test_a_hub_repo_adapter_comes_with_its_config(tmp_path):
    write_adapter(tmp_path / "src", adapter_tensors(SHAPES, rank=2), config={"r": 2, "lora_alpha": 4})
    files = {f"style/{name}": (tmp_path / "src" / name).read_bytes()
             for name in ("pytorch_lora_weights.safetensors", "adapter_config.json")}
    files["README.md"] = b"# a style"
    hub = FakeHub("me/styles", files)
    with LocalServer(hub.routes()) as server:
        settings = settings_for(tmp_path, hub_endpoint=f"http://{server.host}:{server.port}")
        adapter = AdapterLibrary(settings).load("me/styles@v2/style", index=1)
        with pytest.raises(LoraError, match="holds no .safetensors adapter file") as caught:
            AdapterLibrary(settings).load("me/styles", index=1)
        assert caught.value.detail()["loc"] == ["body", "loras", 1, "path"]
        with pytest.raises(LoraError, match="cannot list the Hugging Face repo me/other"):
            AdapterLibrary(settings).load("me/other", index=1)
    assert adapter.config.alpha == 4 and set(layer_scalings(adapter, 1.0, "adapter").values()) == {2.0}
    resolved = [path for _, path, _, _ in server.requests if "/resolve/" in path]
    assert resolved == [f"/me/styles/resolve/{FakeHub.COMMIT}/style/pytorch_lora_weights.safetensors",
                        f"/me/styles/resolve/{FakeHub.COMMIT}/style/adapter_config.json"]


def test_a_hub_file_over_the_cap_is_refused_before_downloading(tmp_path):
    hub = FakeHub("me/big", {"pytorch_lora_weights.safetensors": b"x" * 5000})
    with LocalServer(hub.routes()) as server:
        settings = settings_for(tmp_path, hub_endpoint=f"http://{server.host}:{server.port}", max_download_bytes=4096)
        with pytest.raises(LoraError, match="larger than the 4096 bytes"):
            AdapterLibrary(settings).load("me/big", index=0)
    assert not [path for _, path, _, _ in server.requests if "/resolve/" in path]


def test_the_disk_store_evicts_least_recently_used_adapters(tmp_path):
    payloads = {}
    for seed in range(3):
        write_adapter(tmp_path / f"s{seed}", adapter_tensors(SHAPES, seed=seed))
        payloads[f"/{seed}.safetensors"] = (tmp_path / f"s{seed}" / "pytorch_lora_weights.safetensors").read_bytes()
    size = len(payloads["/0.safetensors"])
    with LocalServer({path: body_route(data) for path, data in payloads.items()}) as server:
        library = AdapterLibrary(settings_for(tmp_path, disk_cache_bytes=2 * size))
        keys = [library.load(server.url(f"/{seed}.safetensors")).sha256 for seed in range(3)]
        assert sorted(p.name for p in (tmp_path / "cache" / "blobs").iterdir()) == sorted(keys[1:])
        library.load(server.url("/0.safetensors"))  # evicted: fetched again
    assert [path for _, path, _, _ in server.requests].count("/0.safetensors") == 2


def test_the_memory_cache_keeps_parsed_adapters_within_its_budget(tmp_path):
    for seed in range(2):
        write_adapter(tmp_path / f"a{seed}", adapter_tensors(SHAPES, seed=seed))
    one = AdapterLibrary(settings_for(tmp_path)).load(str(tmp_path / "a0"), trusted=True).nbytes
    library = AdapterLibrary(settings_for(tmp_path, memory_cache_bytes=one))
    first = library.load(str(tmp_path / "a0"), trusted=True)
    assert library.load(str(tmp_path / "a0"), trusted=True) is first  # parsed once
    library.load(str(tmp_path / "a1"), trusted=True)  # over budget: a0 is dropped
    assert library.load(str(tmp_path / "a0"), trusted=True) is not first


def test_local_adapters_are_read_in_place(tmp_path):
    write_adapter(tmp_path / "mine", adapter_tensors(SHAPES))
    library = AdapterLibrary(settings_for(tmp_path))
    assert library.load(str(tmp_path / "mine" / "pytorch_lora_weights.safetensors"), trusted=True).layers
    assert not (tmp_path / "cache").exists()
    with pytest.raises(LoraError, match="no such file"):
        library.load(str(tmp_path / "absent"), trusted=True)
    with pytest.raises(LoraError, match="local paths are accepted only in infra.toml"):
        library.load(str(tmp_path / "mine"), index=0)


def test_the_download_timeout_bounds_a_slow_server(tmp_path):
    import time

    def slow(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        for _ in range(200):
            handler.wfile.write(b"x" * 10)
            handler.wfile.flush()
            time.sleep(0.05)

    with LocalServer({"/slow.safetensors": slow}) as server:
        library = AdapterLibrary(settings_for(tmp_path, download_timeout_seconds=0.5))
        with pytest.raises(LoraError, match="timed out"):
            library.load(server.url("/slow.safetensors"), index=0)


def test_settings_reject_unknown_lora_keys():
    from acestep_app.settings import SettingsError

    with pytest.raises(SettingsError, match=r"\[lora\] adapters.0.weight: unknown key"):
        Settings.from_toml('[[lora.adapters]]\npath = "a/b"\nweight = 1\n')
    with pytest.raises(SettingsError, match=r"\[lora\] scaling"):
        Settings.from_toml('[lora]\nscaling = "peft"\n')
    assert Settings.from_toml('[[lora.adapters]]\npath = "a/b"\nscale = 1\n').lora.adapters[0].scale == 1.0


def test_the_same_content_from_two_sources_is_stored_once(tmp_path):
    """Two URLs (and two processes' libraries over one cache) with the same bytes share one blob."""
    write_adapter(tmp_path / "src", adapter_tensors(SHAPES))
    data = (tmp_path / "src" / "pytorch_lora_weights.safetensors").read_bytes()
    with LocalServer({"/one.safetensors": body_route(data), "/two.safetensors": body_route(data)}) as server:
        first = AdapterLibrary(settings_for(tmp_path)).load(server.url("/one.safetensors"))
        second = AdapterLibrary(settings_for(tmp_path)).load(server.url("/two.safetensors"))
    assert first.sha256 == second.sha256 and set(second.layers) == set(SHAPES)
    assert [blob.name for blob in (tmp_path / "cache" / "blobs").iterdir()] == [first.sha256]


def test_a_bad_file_is_not_kept_so_a_fixed_one_at_the_same_url_is_fetched(tmp_path):
    write_adapter(tmp_path / "src", adapter_tensors(SHAPES))
    served = {"body": b"not yet an adapter"}
    good = (tmp_path / "src" / "pytorch_lora_weights.safetensors").read_bytes()
    with LocalServer({"/a.safetensors": lambda handler: body_route(served["body"])(handler)}) as server:
        library = AdapterLibrary(settings_for(tmp_path))
        with pytest.raises(LoraError, match="not a valid safetensors file"):
            library.load(server.url("/a.safetensors"), index=0)
        assert not list((tmp_path / "cache" / "blobs").iterdir())
        served["body"] = good
        assert set(library.load(server.url("/a.safetensors"), index=0).layers) == set(SHAPES)
