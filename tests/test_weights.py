"""Weights manifest, pull and verify, offline: huggingface_hub and the HTTP fetch are replaced by
local fakes serving files from a temp folder."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import types
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub.hf_api import RepoFile

from acestep_app.weights import store as weights
from acestep_app.cli import weights as weights_command
from acestep_app.errors import WeightsError
from acestep_app.settings import Settings
from acestep_app.weights.store import (
    PACKAGED_MANIFEST_PATH,
    REPO_MANIFEST_PATH,
    STAMP_FILE,
    Manifest,
    check_pin,
    default_weights_dir,
    ensure_weights,
    find_problems,
    pull,
    resolve_weights_dir,
    verify,
    weights_cache_dir,
)

REPO = "someone/tiny-music"
REVISION = "0123456789abcdef0123456789abcdef01234567"
VOCAB_URL = "https://example.invalid/vocab.json"
REMOTE_FILES = {
    "ace_step_transformer/config.json": b'{"_class_name": "Transformer2DModel"}',
    "ace_step_transformer/diffusion_pytorch_model.safetensors": os.urandom(4096),
    "umt5-base/tokenizer.json": b'{"version": "1.0"}',
}
VOCAB = b'{"model": {"vocab": {"a": 0}}}'


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(vocab: bytes = VOCAB) -> Manifest:
    files = [{"path": path, "sha256": _sha(data), "size": len(data)} for path, data in REMOTE_FILES.items()]
    return Manifest.from_dict(
        {
            "hub": {"acestep": {"repo": REPO, "revision": REVISION, "target": "", "files": files}},
            "url": {"lyric_vocab": {"url": VOCAB_URL, "sha256": _sha(vocab), "path": "lyric_tokenizer/vocab.json"}},
        }
    )


class FakeHub:
    """Serves REMOTE_FILES like ``hf_hub_download(..., local_dir=...)`` and records every call.

    Files of the repos in ``repos`` (repo id -> folder) come from that folder instead.
    """

    def __init__(self, remote: Path):
        self.remote = remote
        self.repos: dict[str, Path] = {}
        self.calls: list[dict] = []
        self.fail: set[str] = set()
        self.events: list[str] = []  # shared with the metadata fake: the order of network calls

    def __call__(self, repo_id, filename, *, revision, local_dir, token=None, force_download=False, **kwargs):
        call = dict(repo_id=repo_id, filename=filename, revision=revision, token=token, force=force_download)
        self.calls.append(call)
        self.events.append(f"download {filename}")
        if filename in self.fail:
            raise OSError("connection reset")
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((self.repos.get(repo_id, self.remote) / filename).read_bytes())
        return str(target)


class FakeMetadata:
    """Stands in for ``HfApi.get_paths_info``: describes the files published in ``repos`` (repo id ->
    folder) as the Hub does, ``*.safetensors`` as LFS files (sha256), the rest as plain git blobs (sha1)."""

    def __init__(self, hub: FakeHub, repos: dict[str, Path]):
        self.hub = hub
        self.repos = repos
        self.calls: list[tuple] = []
        self.error: Exception | None = None
        self.xet_only: set[str] = set()  # described with a Xet hash and no LFS sha256

    def __call__(self, repo_id, paths, *, expand=False, revision=None, repo_type=None, token=None):
        self.calls.append((repo_id, revision, sorted(paths), expand))
        self.hub.events.append("metadata")
        if self.error is not None:
            raise self.error
        assert revision is not None, "digests must be read at the pinned revision"
        found = []
        for path in paths:
            local = self.repos[repo_id] / path
            if not local.is_file():
                continue  # the Hub leaves out paths it does not have
            data = local.read_bytes()
            lfs = {"size": len(data), "oid": _sha(data), "pointerSize": 134} if path.endswith(".safetensors") else None
            if path in self.xet_only:
                found.append(RepoFile(path=path, size=len(data), oid="0" * 40, xetHash="1" * 64))
                continue
            found.append(RepoFile(path=path, size=len(data), oid=_git_blob_sha1(data), lfs=lfs))
        return found

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", lambda api, *args, **kwargs: self(*args, **kwargs))


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


LLM_REPO = "Qwen/Qwen3-4B-Instruct-2507"
LLM_REVISION = "cdbee75f17c01a7cc42f958dc650907174af0554"
LLM_FILES = [
    "config.json", "generation_config.json", "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
    "model-00003-of-00003.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
    "vocab.json", "merges.txt", "LICENSE",
]
SMALL_REPO = "someone/small-llm"
SMALL_LLM = {
    "config.json": b'{"model_type": "qwen3"}',
    "model.safetensors": os.urandom(2048),
    "LICENSE": b"Apache License 2.0\n",
}


def _hub_digest_manifest() -> Manifest:
    files = [{"path": path} for path in SMALL_LLM]
    table = {"repo": SMALL_REPO, "revision": REVISION, "target": "llm", "digests": "hub", "files": files}
    return Manifest.from_dict({"hub": {"llm": table}})


@pytest.fixture
def llm_remote(tmp_path, hub, monkeypatch) -> FakeMetadata:
    """SMALL_LLM published on the fake Hub: served by ``hub``, described by the returned metadata fake."""
    published = tmp_path / "published"
    for path, data in SMALL_LLM.items():
        (published / path).parent.mkdir(parents=True, exist_ok=True)
        (published / path).write_bytes(data)
    served = tmp_path / "served"
    shutil.copytree(published, served)
    hub.repos[SMALL_REPO] = served
    metadata = FakeMetadata(hub, {SMALL_REPO: published})
    metadata.install(monkeypatch)
    return metadata


@pytest.fixture
def remote(tmp_path) -> Path:
    root = tmp_path / "remote"
    for path, data in REMOTE_FILES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


@pytest.fixture
def hub(remote, monkeypatch) -> FakeHub:
    fake = FakeHub(remote)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return fake


@pytest.fixture
def http(monkeypatch) -> list[str]:
    requested: list[str] = []

    def fake_get(url: str) -> bytes:
        requested.append(url)
        return VOCAB

    monkeypatch.setattr(weights, "_http_get", fake_get)
    return requested


# ------------------------------------------------------------------------------------------ manifest


def _spec_digests(shared_dir: Path) -> dict[str, str]:
    text = (shared_dir / "spec" / "official-weights.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^\| ([\w./-]+) \| ([0-9a-f]{64}) \|$", text, flags=re.MULTILINE))


def test_manifest_pins_equal_the_spec(shared_dir):
    manifest = Manifest.load()
    acestep = manifest.hub["acestep"]
    assert (acestep.repo, acestep.revision) == ("ACE-Step/ACE-Step-v1-3.5B", "82cd0d7b6322bd28cd4e830fe675ddb6180ce36c")
    assert acestep.target == ""
    spec = _spec_digests(shared_dir)
    assert len(spec) == 11
    assert {f.path: f.sha256 for f in acestep.files} == spec
    assert [f.remote for f in acestep.files] == [f.path for f in acestep.files]

    vocab = manifest.url["lyric_vocab"]
    assert vocab.url == (
        "https://raw.githubusercontent.com/ace-step/ACE-Step/d612523f50e252c0e138e68ae75b06223f96e934/"
        "acestep/models/lyrics_utils/vocab.json"
    )
    assert vocab.file.path == "lyric_tokenizer/vocab.json"
    spec_copy = (shared_dir / "spec" / "lyrics_vocab.json").read_bytes()
    assert vocab.file.sha256 == _sha(spec_copy) == "c2a66ea48c478c0bb9acb5497144b926acdeaa37128faa799508d40f2b9cc558"
    assert vocab.file.size == len(spec_copy)


def test_manifest_sizes_agree_with_the_spec_state_dicts(shared_dir):
    import json
    import math

    shapes = json.loads((shared_dir / "spec" / "official-state-dict-shapes.json").read_text())
    sizes = {f.path: f.size for f in Manifest.load().hub["acestep"].files}
    for folder in ("ace_step_transformer", "music_dcae_f8c8", "music_vocoder"):
        tensors = {k: v for k, v in shapes[folder].items() if isinstance(v, list)}
        payload = 2 * sum(math.prod(shape) for shape in tensors.values())  # 16-bit parameters
        header = sizes[f"{folder}/diffusion_pytorch_model.safetensors"] - payload
        assert 50 * len(tensors) < header < 200 * len(tensors), folder


def test_packaged_manifest_is_the_repository_copy():
    assert PACKAGED_MANIFEST_PATH.read_bytes() == REPO_MANIFEST_PATH.read_bytes(), (
        "copy weights/manifest.toml to acestep_app/data/manifest.toml"
    )


def test_infra_toml_pins_the_manifest_revision():
    check_pin(Settings.load(), Manifest.load())
    other = Settings.from_dict({"weights": {"revision": "f" * 40}})
    with pytest.raises(WeightsError, match="update both"):
        check_pin(other, Manifest.load())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"models": {}}, "unknown sections"),
        ({"hub": {"x": {"repo": "a/b", "revision": "r", "files": [], "mirror": "y"}}}, "unknown keys"),
        ({"hub": {"x": {"repo": "a/b", "revision": "r", "files": [{"path": "a", "sha256": "00"}]}}}, "64 lowercase"),
        ({"hub": {"x": {"repo": "a/b", "revision": "r", "files": [{"path": "../a", "sha256": "0" * 64}]}}}, "inside"),
        ({"url": {"v": {"url": "http://x/v.json", "sha256": "0" * 64, "path": "v.json"}}}, "https"),
        (
            {
                "hub": {"x": {"repo": "a/b", "revision": "r", "files": [{"path": "v.json", "sha256": "0" * 64}]}},
                "url": {"v": {"url": "https://x/v.json", "sha256": "1" * 64, "path": "v.json"}},
            },
            "listed twice",
        ),
    ],
)
def test_invalid_manifests_are_rejected(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        Manifest.from_dict(data)


def test_manifest_accepts_more_entries(tmp_path):
    text = REPO_MANIFEST_PATH.read_text() + (
        '\n[hub.songwriter]\nrepo = "someone/llm"\nrevision = "' + "a" * 40 + '"\ntarget = "songwriter"\n'
        'files = [{ path = "model.safetensors", sha256 = "' + "b" * 64 + '" }]\n'
    )
    (tmp_path / "manifest.toml").write_text(text)
    manifest = Manifest.load(tmp_path / "manifest.toml")
    assert manifest.names() == ["acestep", "llm", "asr", "songwriter", "lyric_vocab"]
    [llm_file] = manifest.files(only=["songwriter"])
    assert (llm_file.path, llm_file.remote) == ("songwriter/model.safetensors", "model.safetensors")
    assert len(manifest.files(only=["acestep", "lyric_vocab"])) == 12
    with pytest.raises(WeightsError, match="unknown manifest entries"):
        manifest.files(only=["nope"])


# ---------------------------------------------------------------------------------------------- pull


def test_pull_fetches_checks_and_stamps(tmp_path, hub, http, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    dest = tmp_path / "weights"
    assert pull(dest, progress=False, manifest=_manifest()) == dest
    for path, data in REMOTE_FILES.items():
        assert (dest / path).read_bytes() == data
    assert (dest / "lyric_tokenizer" / "vocab.json").read_bytes() == VOCAB
    assert sorted(call["filename"] for call in hub.calls) == sorted(REMOTE_FILES)
    assert {(c["repo_id"], c["revision"], c["token"], c["force"]) for c in hub.calls} == {
        (REPO, REVISION, "hf_secret", False)
    }
    assert http == [VOCAB_URL]
    assert (dest / STAMP_FILE).is_file()

    hub.calls.clear()
    http.clear()
    pull(dest, progress=False, manifest=_manifest())  # warm: verified files are trusted, no network
    assert hub.calls == [] and http == []


def test_pull_refetches_only_missing_or_bad_files(tmp_path, hub, http):
    dest = tmp_path / "weights"
    pull(dest, progress=False, manifest=_manifest())
    hub.calls.clear()
    http.clear()
    (dest / "umt5-base" / "tokenizer.json").unlink()
    (dest / "ace_step_transformer" / "config.json").write_bytes(b"corrupted!")
    pull(dest, progress=False, manifest=_manifest())
    fetched = {call["filename"]: call["force"] for call in hub.calls}
    assert fetched == {"umt5-base/tokenizer.json": False, "ace_step_transformer/config.json": True}
    assert http == []
    verify(dest, _manifest())


def test_pull_adopts_files_already_present(tmp_path, hub, http, remote):
    dest = tmp_path / "weights"
    for path in REMOTE_FILES:  # e.g. copied from another cache: hashed once, not downloaded
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_bytes((remote / path).read_bytes())
    pull(dest, progress=False, manifest=_manifest())
    assert hub.calls == [] and http == [VOCAB_URL]


def test_pull_digest_mismatch_names_file_and_both_digests(tmp_path, hub, http, remote):
    bad = b"a different, longer upload"
    (remote / "umt5-base" / "tokenizer.json").write_bytes(bad)
    dest = tmp_path / "weights"
    with pytest.raises(WeightsError) as caught:
        pull(dest, progress=False, manifest=_manifest())
    message = str(caught.value)
    assert "umt5-base/tokenizer.json" in message
    assert f"expected {_sha(REMOTE_FILES['umt5-base/tokenizer.json'])}" in message
    assert f"got {_sha(bad)} (size {len(bad)} bytes, expected 18)" in message
    assert "ace_step_transformer" not in message  # only the bad file is named
    # the good files are remembered; the bad one is fetched again next time
    hub.calls.clear()
    with pytest.raises(WeightsError):
        pull(dest, progress=False, manifest=_manifest())
    assert [call["filename"] for call in hub.calls] == ["umt5-base/tokenizer.json"]


def test_pull_sha256_mismatch_with_matching_size(tmp_path, hub, http, remote):
    original = REMOTE_FILES["ace_step_transformer/config.json"]
    tampered = original[:-2] + b"X}"
    (remote / "ace_step_transformer" / "config.json").write_bytes(tampered)
    with pytest.raises(WeightsError, match=f"sha256 mismatch: expected {_sha(original)}, got {_sha(tampered)}"):
        pull(tmp_path / "weights", progress=False, manifest=_manifest())


def test_vocab_digest_mismatch(tmp_path, hub, monkeypatch):
    monkeypatch.setattr(weights, "_http_get", lambda url: b"not the vocabulary")
    with pytest.raises(WeightsError, match=r"lyric_tokenizer/vocab.json: .*expected"):
        pull(tmp_path / "weights", progress=False, manifest=_manifest())


def test_download_failures_are_reported_per_file(tmp_path, hub, http):
    hub.fail.add("umt5-base/tokenizer.json")
    with pytest.raises(WeightsError, match=r"umt5-base/tokenizer.json: download failed: OSError: connection reset"):
        pull(tmp_path / "weights", progress=False, manifest=_manifest())
    assert (tmp_path / "weights" / "ace_step_transformer" / "config.json").is_file()  # the rest was fetched


def test_pull_checks_free_space_first(tmp_path, hub, http, monkeypatch):
    huge = Manifest.from_dict(
        {"url": {"big": {"url": "https://x/big.bin", "sha256": "0" * 64, "size": 10**18, "path": "big.bin"}}}
    )
    with pytest.raises(WeightsError, match="not enough disk space"):
        pull(tmp_path / "weights", progress=False, manifest=huge)
    assert http == []


def test_real_manifest_requests_the_pinned_files(tmp_path, hub, http, monkeypatch):
    monkeypatch.setattr(weights, "_check_free_space", lambda *args: None)
    manifest = Manifest.load()
    hub.remote = tmp_path / "any"
    for f in manifest.files(["acestep"]):
        (hub.remote / f.path).parent.mkdir(parents=True, exist_ok=True)
        (hub.remote / f.path).write_bytes(b"x")
    llm = manifest.hub["llm"]
    hub.repos[llm.repo] = tmp_path / "llm-remote"
    for f in llm.files:
        (tmp_path / "llm-remote" / f.remote).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "llm-remote" / f.remote).write_bytes(b"y")
    metadata = FakeMetadata(hub, {llm.repo: tmp_path / "llm-remote"})
    metadata.install(monkeypatch)
    with pytest.raises(WeightsError):  # the stand-in bytes fail every digest
        pull(tmp_path / "weights", progress=False, manifest=manifest, only=["acestep", "llm", "lyric_vocab"])
    acestep_calls = [call for call in hub.calls if call["repo_id"] != llm.repo]
    assert sorted(call["filename"] for call in acestep_calls) == sorted(_spec_paths(manifest))
    assert {(call["repo_id"], call["revision"]) for call in acestep_calls} == {
        ("ACE-Step/ACE-Step-v1-3.5B", "82cd0d7b6322bd28cd4e830fe675ddb6180ce36c")
    }
    llm_calls = [call for call in hub.calls if call["repo_id"] == llm.repo]
    assert sorted(call["filename"] for call in llm_calls) == sorted(LLM_FILES)
    assert {call["revision"] for call in llm_calls} == {LLM_REVISION}
    assert metadata.calls == [(LLM_REPO, LLM_REVISION, sorted(LLM_FILES), True)]
    assert (tmp_path / "weights" / "llm" / "config.json").read_bytes() == b"y"  # matched the Hub's digest
    assert not find_problems(tmp_path / "weights", manifest, only=["llm"], quick=True)
    assert http == [manifest.url["lyric_vocab"].url]


def test_asr_model_is_pinned_by_commit_with_hub_digests():
    asr = Manifest.load().hub["asr"]
    assert (asr.repo, asr.revision, asr.target) == ("openai/whisper-large-v3-turbo",
                                                    "41f01f3fe87f28c78e2fbf8b568835947dd65ed9", "asr")
    remotes = {f.remote for f in asr.files}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= remotes
    assert all(f.hub_pin is not None and f.path.startswith("asr/") for f in asr.files)


def _spec_paths(manifest: Manifest) -> list[str]:
    return [f.path for f in manifest.hub["acestep"].files]


# -------------------------------------------------------------------------------------------- verify


def test_verify_names_every_missing_or_bad_file(tmp_path, hub, http):
    dest = tmp_path / "weights"
    pull(dest, progress=False, manifest=_manifest())
    (dest / "umt5-base" / "tokenizer.json").unlink()
    (dest / "lyric_tokenizer" / "vocab.json").write_bytes(b"{}")
    problems = find_problems(dest, _manifest())
    assert problems == ["umt5-base/tokenizer.json: missing", f"lyric_tokenizer/vocab.json: sha256 mismatch: "
                        f"expected {_sha(VOCAB)}, got {_sha(b'{}')}"]
    with pytest.raises(WeightsError) as caught:
        verify(dest, _manifest())
    assert "umt5-base/tokenizer.json: missing" in str(caught.value)
    assert "lyric_tokenizer/vocab.json" in str(caught.value)
    assert len(find_problems(tmp_path / "nowhere", _manifest())) == 4


def test_quick_verify_trusts_stamps_and_full_verify_rehashes(tmp_path, hub, http):
    dest = tmp_path / "weights"
    pull(dest, progress=False, manifest=_manifest())
    target = dest / "ace_step_transformer" / "diffusion_pytorch_model.safetensors"
    stat = target.stat()
    target.write_bytes(os.urandom(stat.st_size))  # same size, restored mtime: only a hash can tell
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    verify(dest, _manifest(), quick=True)
    with pytest.raises(WeightsError, match="diffusion_pytorch_model.safetensors: sha256 mismatch"):
        verify(dest, _manifest())
    with pytest.raises(WeightsError):  # the failed full check also withdrew the stamp
        verify(dest, _manifest(), quick=True)


# -------------------------------------------------------------------------------------- hub digests


def test_manifest_pins_the_prompt_llm_with_hub_digests():
    llm = Manifest.load().hub["llm"]
    assert (llm.repo, llm.revision, llm.target, llm.digests) == (LLM_REPO, LLM_REVISION, "llm", "hub")
    assert [f.remote for f in llm.files] == LLM_FILES
    assert [f.path for f in llm.files] == [f"llm/{name}" for name in LLM_FILES]
    assert {(f.sha256, f.size, f.hub_pin) for f in llm.files} == {(None, None, f"{LLM_REPO}@{LLM_REVISION}")}


@pytest.mark.parametrize(
    ("files", "digests", "message"),
    [
        ([{"path": "model.safetensors", "sha256": "0" * 64}], "hub", "lists paths only, remove \\['sha256'\\]"),
        ([{"path": "model.safetensors", "size": 12}], "hub", "lists paths only, remove \\['size'\\]"),
        ([{"path": "model.safetensors"}], "sha1", 'digests must be "manifest" or "hub"'),
        ([{"path": "model.safetensors"}], "", 'digests must be "manifest" or "hub"'),
        ([{"path": "model.safetensors"}], "manifest", "'sha256'"),  # manifest digests need a sha256
        ([{"path": "../model.safetensors"}], "hub", "inside"),
    ],
)
def test_invalid_hub_digest_entries_are_rejected(files, digests, message):
    table = {"repo": "a/b", "revision": "r", "target": "llm", "digests": digests, "files": files}
    with pytest.raises((ValueError, KeyError), match=message):
        Manifest.from_dict({"hub": {"llm": table}})


def test_hub_digest_entry_rejected_through_load(tmp_path):
    (tmp_path / "manifest.toml").write_text(
        '[hub.llm]\nrepo = "a/b"\nrevision = "r"\ndigests = "hub"\n'
        f'files = [{{ path = "config.json", sha256 = "{"0" * 64}" }}]\n'
    )
    with pytest.raises(WeightsError, match="invalid weights manifest .*lists paths only"):
        Manifest.load(tmp_path / "manifest.toml")


def test_git_blob_sha1_is_what_git_computes(tmp_path):
    data = SMALL_LLM["config.json"]
    (tmp_path / "config.json").write_bytes(data)
    git = subprocess.run(["git", "hash-object", str(tmp_path / "config.json")], capture_output=True, text=True)
    assert git.returncode == 0, git.stderr
    assert _git_blob_sha1(data) == git.stdout.strip()
    digests = weights.hash_file(tmp_path / "config.json", git_blob=True)
    assert digests == {weights.SHA256: _sha(data), weights.GIT_BLOB_SHA1: git.stdout.strip()}


def test_pull_checks_lfs_and_git_blob_files_against_hub_metadata(tmp_path, hub, llm_remote):
    dest = tmp_path / "weights"
    pull(dest, progress=False, manifest=_hub_digest_manifest())
    for path, data in SMALL_LLM.items():
        assert (dest / "llm" / path).read_bytes() == data
    assert llm_remote.calls == [(SMALL_REPO, REVISION, sorted(SMALL_LLM), True)]  # one call for the entry
    assert hub.events[0] == "metadata" and hub.events.count("metadata") == 1  # digests before any download
    assert {(c["repo_id"], c["revision"]) for c in hub.calls} == {(SMALL_REPO, REVISION)}
    stamps = json.loads((dest / STAMP_FILE).read_text())
    for path, data in SMALL_LLM.items():  # the sha256 is recorded, also for files the Hub gave a git sha1 for
        assert stamps[f"llm/{path}"]["sha256"] == _sha(data)
        assert stamps[f"llm/{path}"]["hub"] == f"{SMALL_REPO}@{REVISION}"


def test_warm_pull_and_verify_reuse_the_recorded_digests_offline(tmp_path, hub, llm_remote):
    dest = tmp_path / "weights"
    pull(dest, progress=False, manifest=_hub_digest_manifest())
    hub.calls.clear()
    llm_remote.calls.clear()
    llm_remote.error = OSError("network is unreachable")  # any metadata call now fails
    hub.fail.update(SMALL_LLM)
    pull(dest, progress=False, manifest=_hub_digest_manifest())
    verify(dest, _hub_digest_manifest(), quick=True)
    verify(dest, _hub_digest_manifest())  # full: rehashes and compares with the recorded sha256
    assert hub.calls == [] and llm_remote.calls == []


def test_offline_full_verify_catches_changes_to_hub_verified_files(tmp_path, hub, llm_remote):
    dest = tmp_path / "weights"
    pull(dest, progress=False, manifest=_hub_digest_manifest())
    target = dest / "llm" / "model.safetensors"
    stat = target.stat()
    target.write_bytes(os.urandom(stat.st_size))  # same size, restored mtime: only a hash can tell
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    verify(dest, _hub_digest_manifest(), quick=True)
    for _ in range(2):  # the recorded Hub digest survives the failed check: same verdict next time
        with pytest.raises(WeightsError) as caught:
            verify(dest, _hub_digest_manifest())
        message = str(caught.value)
        assert f"llm/model.safetensors: sha256 mismatch: expected {_sha(SMALL_LLM['model.safetensors'])}" in message
        assert f"recorded when pull verified it against the Hub at {SMALL_REPO}@{REVISION}" in message
        assert "config.json" not in message
    assert llm_remote.calls == [(SMALL_REPO, REVISION, sorted(SMALL_LLM), True)]  # only the first pull's

    hub.calls.clear()
    pull(dest, progress=False, manifest=_hub_digest_manifest())  # re-fetched alone, checked against the Hub again
    assert [(c["filename"], c["force"]) for c in hub.calls] == [("model.safetensors", True)]
    assert llm_remote.calls[-1] == (SMALL_REPO, REVISION, ["model.safetensors"], True)
    verify(dest, _hub_digest_manifest())


def test_verify_names_files_never_verified_against_the_hub(tmp_path, hub, llm_remote):
    dest = tmp_path / "weights"
    for path, data in SMALL_LLM.items():  # copied in by hand, never pulled
        (dest / "llm" / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / "llm" / path).write_bytes(data)
    for quick in (True, False):
        problems = find_problems(dest, _hub_digest_manifest(), quick=quick)
        assert len(problems) == 3
        assert all("never verified against the Hub" in p and f"{SMALL_REPO}@{REVISION}" in p for p in problems)
    assert llm_remote.calls == []  # verify never uses the network

    pull(dest, progress=False, manifest=_hub_digest_manifest())  # adopts them once the Hub's digests match
    assert hub.calls == [] and len(llm_remote.calls) == 1
    verify(dest, _hub_digest_manifest())


@pytest.mark.parametrize(
    ("path", "algorithm"), [("model.safetensors", "sha256"), ("config.json", "git blob sha1")]
)
def test_pull_rejects_files_that_differ_from_the_hub_digest(tmp_path, hub, llm_remote, path, algorithm):
    published = SMALL_LLM[path]
    tampered = published[:-2] + b"X}"  # same size: only the digest can tell
    (hub.repos[SMALL_REPO] / path).write_bytes(tampered)
    dest = tmp_path / "weights"
    with pytest.raises(WeightsError) as caught:
        pull(dest, progress=False, manifest=_hub_digest_manifest())
    message = str(caught.value)
    digest = _sha if algorithm == "sha256" else _git_blob_sha1
    assert f"llm/{path}: {algorithm} mismatch: expected {digest(published)}, got {digest(tampered)}" in message
    assert f"(from the Hub at {SMALL_REPO}@{REVISION})" in message
    assert [line for line in message.splitlines() if "mismatch" in line] == [message.splitlines()[1]]
    stamps = json.loads((dest / STAMP_FILE).read_text())
    assert f"llm/{path}" not in stamps and len(stamps) == 2  # the other files are verified and recorded
    with pytest.raises(WeightsError, match="never verified against the Hub"):
        verify(dest, _hub_digest_manifest())


def test_pull_reports_size_differences_from_the_hub(tmp_path, hub, llm_remote):
    (hub.repos[SMALL_REPO] / "LICENSE").write_bytes(b"a longer, different license text\n")
    with pytest.raises(WeightsError, match=r"llm/LICENSE: git blob sha1 mismatch: .* \(size 33 bytes, expected 19\)"):
        pull(tmp_path / "weights", progress=False, manifest=_hub_digest_manifest())


def test_pull_fails_when_hub_metadata_is_unavailable(tmp_path, hub, http, llm_remote):
    llm_remote.error = OSError("network is unreachable")
    both = _manifest()
    both = Manifest(hub={**both.hub, **_hub_digest_manifest().hub}, url=both.url)
    with pytest.raises(WeightsError) as caught:
        pull(tmp_path / "weights", progress=False, manifest=both)
    assert f"[hub.llm]: cannot read its file digests from the Hub ({SMALL_REPO}@{REVISION}): OSError: network" in str(
        caught.value
    )
    assert str(caught.value).count("\n") == 1  # one line for the entry, nothing about the other files
    assert {c["repo_id"] for c in hub.calls} == {REPO}  # nothing is downloaded without a digest to check it
    verify(tmp_path / "weights", both, only=["acestep", "lyric_vocab"])  # the other entries were pulled


def test_pull_names_files_missing_from_the_hub_revision(tmp_path, hub, llm_remote):
    (llm_remote.repos[SMALL_REPO] / "LICENSE").unlink()
    with pytest.raises(WeightsError) as caught:
        pull(tmp_path / "weights", progress=False, manifest=_hub_digest_manifest())
    assert f"llm/LICENSE: not a file of {SMALL_REPO} at revision {REVISION}" in str(caught.value)
    assert sorted(c["filename"] for c in hub.calls) == ["config.json", "model.safetensors"]


def test_pull_refuses_files_the_hub_gives_no_content_digest_for(tmp_path, hub, llm_remote):
    llm_remote.xet_only.add("model.safetensors")
    with pytest.raises(WeightsError, match=f"llm/model.safetensors: the Hub gives no sha256 for it at {REVISION}"):
        pull(tmp_path / "weights", progress=False, manifest=_hub_digest_manifest())
    assert sorted(c["filename"] for c in hub.calls) == ["LICENSE", "config.json"]


def test_hub_digest_sizes_count_in_the_free_space_check(tmp_path, hub, llm_remote, monkeypatch):
    needed = sum(len(data) for data in SMALL_LLM.values())  # known from the Hub's metadata only
    monkeypatch.setattr(weights.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=needed - 1))
    with pytest.raises(WeightsError, match="not enough disk space"):
        pull(tmp_path / "weights", progress=False, manifest=_hub_digest_manifest())
    assert hub.calls == []


def test_manifest_and_hub_digest_entries_pull_together(tmp_path, hub, http, llm_remote):
    both = _manifest()
    both = Manifest(hub={**both.hub, **_hub_digest_manifest().hub}, url=both.url)
    dest = tmp_path / "weights"
    pull(dest, progress=False, manifest=both)
    assert len(hub.calls) == len(REMOTE_FILES) + len(SMALL_LLM)
    assert len(llm_remote.calls) == 1  # [hub.acestep]-style entries need no metadata
    verify(dest, both)


def test_command_verify_counts_hub_recorded_digests(tmp_path, hub, http, llm_remote, monkeypatch, capsys):
    monkeypatch.setattr(weights.Manifest, "load", classmethod(lambda cls, path=None: _hub_digest_manifest()))
    dest = tmp_path / "weights"
    assert _run_command(["verify", "--dir", str(dest)]) == 1
    assert _run_command(["pull", "--dir", str(dest), "--quiet"]) == 0
    assert _run_command(["verify", "--dir", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "match the manifest (3 files; 3 checked against digests recorded from the Hub" in out


# ----------------------------------------------------------------------------------------- locations


def test_weights_locations(tmp_path, monkeypatch):
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    assert default_weights_dir() == Path.home() / ".cache" / "acestep-app" / "weights"
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "env"))
    assert default_weights_dir() == tmp_path / "env"
    assert weights_cache_dir(Settings()) == tmp_path / "env"
    configured = Settings.from_dict({"weights": {"cache_dir": str(tmp_path / "cache")}})
    assert weights_cache_dir(configured) == resolve_weights_dir(configured) == tmp_path / "cache"
    explicit = Settings.from_dict({"engine": {"weights_dir": str(tmp_path / "tiny")}})
    assert resolve_weights_dir(explicit) == tmp_path / "tiny"


def test_ensure_weights(tmp_path, hub, http, monkeypatch):
    explicit = Settings.from_dict({"engine": {"weights_dir": str(tmp_path / "tiny")}})
    assert ensure_weights(explicit, manifest=_manifest()) == tmp_path / "tiny"  # used as is: no pull
    assert hub.calls == []
    pinned = Settings.from_dict({"weights": {"repo": REPO, "revision": REVISION, "cache_dir": str(tmp_path / "c")}})
    assert ensure_weights(pinned, progress=False, manifest=_manifest()) == tmp_path / "c"
    assert len(hub.calls) == 3
    with pytest.raises(WeightsError, match="update both"):
        ensure_weights(Settings.from_dict({"weights": {"cache_dir": str(tmp_path / "c")}}), manifest=_manifest())


# ------------------------------------------------------------------------------------------- command


def _run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    weights_command.add_arguments(parser)
    return weights_command.run(parser.parse_args(argv))


def test_command_pull_and_verify(tmp_path, hub, http, monkeypatch, capsys):
    monkeypatch.setattr(weights.Manifest, "load", classmethod(lambda cls, path=None: _manifest()))
    dest = tmp_path / "weights"
    assert _run_command(["pull", "--dir", str(dest), "--quiet"]) == 0
    assert _run_command(["verify", "--dir", str(dest)]) == 0
    assert "match the manifest (4 files)" in capsys.readouterr().out
    (dest / "umt5-base" / "tokenizer.json").unlink()
    assert _run_command(["verify", "--dir", str(dest), "--quick"]) == 1


def test_command_default_dir_comes_from_settings(tmp_path, hub, http, monkeypatch):
    monkeypatch.setattr(weights.Manifest, "load", classmethod(lambda cls, path=None: _manifest()))
    infra = tmp_path / "infra.toml"
    infra.write_text(f'[weights]\nrepo = "{REPO}"\nrevision = "{REVISION}"\ncache_dir = "{tmp_path / "cache"}"\n')
    monkeypatch.setenv("ACESTEP_INFRA", str(infra))
    assert _run_command(["pull", "--quiet"]) == 0
    assert (tmp_path / "cache" / "lyric_tokenizer" / "vocab.json").is_file()
    infra.write_text("[weights]\ncache_dir = 3\n")
    assert _run_command(["verify"]) == 1  # settings errors are reported, not raised


def test_command_make_tiny_writes_the_named_family(tmp_path, monkeypatch, capsys):
    from acestep_app.acestep_v1.tiny import TINY_MARKER

    monkeypatch.delenv("ACESTEP_INFRA", raising=False)
    assert _run_command(["make-tiny", str(tmp_path / "default")]) == 0  # the primary family of infra.toml
    assert (tmp_path / "default" / TINY_MARKER).is_file()
    printed = capsys.readouterr().out
    assert "acestep-v1" in printed and "noise" in printed
    assert _run_command(["make-tiny", str(tmp_path / "v1"), "--family", "acestep-v1"]) == 0
    assert (tmp_path / "v1" / "ace_step_transformer" / "config.json").is_file()
    assert _run_command(["make-tiny", str(tmp_path / "x"), "--family", "no-such-family"]) == 1
    assert not (tmp_path / "x").exists()


def test_command_pulls_the_asr_model_only_when_takes_are_ranked(tmp_path, monkeypatch):
    pulled = []
    monkeypatch.setattr(weights, "pull", lambda folder, progress, only, manifest: pulled.append(only))
    monkeypatch.setenv("ACESTEP_INFRA", str(tmp_path / "infra.toml"))
    (tmp_path / "infra.toml").write_text("")
    assert _run_command(["pull", "--dir", str(tmp_path / "w"), "--quiet"]) == 0
    (tmp_path / "infra.toml").write_text("[quality]\ntakes = 4\n")
    assert _run_command(["pull", "--dir", str(tmp_path / "w"), "--quiet"]) == 0
    assert _run_command(["pull", "--dir", str(tmp_path / "w"), "--quiet", "--only", "asr"]) == 0
    assert pulled == [["acestep", "llm", "lyric_vocab"], ["acestep", "llm", "asr", "lyric_vocab"], ["asr"]]


def test_pinned_loras_are_pulled_only_when_named(tmp_path, hub, http, monkeypatch, caplog):
    """`weights pull --lora rapmachine`: the official v1 RapMachine LoRA, digests from the Hub at its pin."""
    manifest = Manifest.load()
    rap = manifest.hub["rapmachine"]
    assert rap.repo == "ACE-Step/ACE-Step-v1-chinese-rap-LoRA" and rap.lora and rap.digests == "hub"
    assert "rapmachine" not in manifest.names() and manifest.lora_names() == ["rapmachine"]
    assert not [f for f in manifest.files() if f.entry == "rapmachine"]  # a plain pull never fetches it
    published = tmp_path / "published"
    for f in rap.files:
        (published / f.remote).parent.mkdir(parents=True, exist_ok=True)
        (published / f.remote).write_bytes(os.urandom(64))
    hub.repos[rap.repo] = published
    FakeMetadata(hub, {rap.repo: published}).install(monkeypatch)
    small = _manifest()
    with_lora = weights.Manifest(hub={**small.hub, "rapmachine": rap}, url=small.url)
    monkeypatch.setattr(weights.Manifest, "load", classmethod(lambda cls, path=None: with_lora))
    dest = tmp_path / "weights"
    assert _run_command(["pull", "--dir", str(dest), "--quiet"]) == 0
    assert not (dest / "loras").exists()
    assert _run_command(["pull", "--dir", str(dest), "--quiet", "--lora", "rapmachine"]) == 0
    for f in rap.files:
        assert (dest / "loras" / "rapmachine" / f.remote).read_bytes() == (published / f.remote).read_bytes()
    assert {(call["repo_id"], call["revision"]) for call in hub.calls if call["repo_id"] == rap.repo} == {
        (rap.repo, rap.revision)}
    assert _run_command(["pull", "--dir", str(dest), "--quiet", "--lora", "nope"]) == 1
    assert "unknown LoRA ['nope']; pinned adapters: ['rapmachine']" in caplog.text
