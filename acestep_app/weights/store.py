"""Pinned weights: the manifest, ``pull`` (download + sha256 check) and ``verify``.

The manifest (``weights/manifest.toml``; a packaged copy ships inside ``acestep_app/data``) lists
every file with its sha256: ``[hub.<name>]`` entries are files of a Hugging Face repo at a pinned
commit, ``[url.<name>]`` entries single files fetched over HTTPS (the lyric vocabulary). Entries
land in one weights directory that has the official checkpoint layout at its root, so the models'
``from_pretrained`` read it directly.

A hub entry with ``digests = "hub"`` lists paths only: before downloading, ``pull`` reads each
file's digest from the Hub's metadata at the pinned commit (the LFS sha256, or for small non-LFS
files the git blob sha1) and checks the download against it. The commit pins the content; the Hub
only tells us its digest.

A successful check is remembered in ``.acestep-verified.json`` (digest, size and mtime per file;
for ``digests = "hub"`` files also the repo@revision they were verified against), so a warm
restart's ``pull`` trusts unchanged files without hashing 8 GB again and needs no network.
``verify`` rehashes everything unless ``quick=True``; it never uses the network, so ``digests =
"hub"`` files are compared with the sha256 recorded when ``pull`` verified them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import tomllib
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from acestep_app.errors import WeightsError
from acestep_app.settings import Settings

logger = logging.getLogger(__name__)

ACESTEP_ENTRY = "acestep"
WEIGHTS_DIR_ENV = "ACESTEP_WEIGHTS_DIR"
REPO_MANIFEST_PATH = Path(__file__).resolve().parents[2] / "weights" / "manifest.toml"
PACKAGED_MANIFEST_PATH = Path(__file__).resolve().parents[1] / "data" / "manifest.toml"
STAMP_FILE = ".acestep-verified.json"
_HASH_CHUNK = 8 << 20
_MAX_WORKERS = 4
DIGESTS_FROM_MANIFEST = "manifest"
DIGESTS_FROM_HUB = "hub"
SHA256 = "sha256"
GIT_BLOB_SHA1 = "git blob sha1"


@dataclass(frozen=True)
class WeightFile:
    """One file of the weights directory and where it comes from."""

    path: str  # relative to the weights directory
    sha256: str | None  # None: the digest comes from the Hub at ``hub_pin``
    size: int | None
    entry: str  # manifest entry name
    remote: str  # path inside the hub repo, or the URL
    hub_pin: str | None = None  # "repo@revision" of a ``digests = "hub"`` entry


@dataclass(frozen=True)
class HubEntry:
    name: str
    repo: str
    revision: str
    target: str
    files: tuple[WeightFile, ...]
    digests: str = DIGESTS_FROM_MANIFEST
    lora: bool = False  # a [lora.<name>] entry: an optional adapter, pulled only when named


@dataclass(frozen=True)
class Expected:
    """The digest one file must have, and where that digest came from."""

    digest: str
    algorithm: str  # SHA256 or GIT_BLOB_SHA1
    size: int | None
    source: str  # "the manifest", "the Hub at repo@revision", "the digest recorded when pull verified it ..."


@dataclass(frozen=True)
class UrlEntry:
    name: str
    url: str
    file: WeightFile


@dataclass(frozen=True)
class Manifest:
    hub: Mapping[str, HubEntry]
    url: Mapping[str, UrlEntry]

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> Manifest:
        """Read ``path``, else the repository's ``weights/manifest.toml``, else the packaged copy."""
        if path is None:
            path = REPO_MANIFEST_PATH if REPO_MANIFEST_PATH.is_file() else PACKAGED_MANIFEST_PATH
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise WeightsError(f"cannot read weights manifest {path}: {error}") from error
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as error:
            raise WeightsError(f"invalid weights manifest {path}: {error}") from error

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        unknown = set(data) - {"hub", "url", "lora"}
        if unknown:
            raise ValueError(f"unknown sections {sorted(unknown)} (expected [hub.<name>], [url.<name>], [lora.<name>])")
        hub = {name: _hub_entry(name, table) for name, table in data.get("hub", {}).items()}
        for name, table in data.get("lora", {}).items():
            if name in hub:
                raise ValueError(f"[lora.{name}]: the name is taken by [hub.{name}]")
            hub[name] = _hub_entry(name, {"target": f"loras/{name}", **table}, section="lora")
        url = {name: _url_entry(name, table) for name, table in data.get("url", {}).items()}
        manifest = cls(hub=hub, url=url)
        paths = [f.path for f in manifest.files()]
        duplicates = sorted({p for p in paths if paths.count(p) > 1})
        if duplicates:
            raise ValueError(f"files listed twice: {duplicates}")
        return manifest

    def names(self) -> list[str]:
        """The weight entries (the optional ``[lora.<name>]`` adapters are :meth:`lora_names`)."""
        return [*(name for name, entry in self.hub.items() if not entry.lora), *self.url]

    def lora_names(self) -> list[str]:
        return [name for name, entry in self.hub.items() if entry.lora]

    def files(self, only: Collection[str] | None = None) -> list[WeightFile]:
        """Every file of the entries named in ``only`` (default: every weight entry, no LoRA)."""
        if only is not None:
            unknown = set(only) - {*self.names(), *self.lora_names()}
            if unknown:
                raise WeightsError(f"unknown manifest entries {sorted(unknown)}; known: {self.names() + self.lora_names()}")
        wanted = set(self.names() if only is None else only)
        files = [f for entry in self.hub.values() for f in entry.files] + [entry.file for entry in self.url.values()]
        return [f for f in files if f.entry in wanted]


def _file(
    entry: str, path: str, sha256: str | None, size: int | None, remote: str, hub_pin: str | None = None
) -> WeightFile:
    if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256)):
        raise ValueError(f"{entry}: {path}: sha256 must be 64 lowercase hex digits")
    if Path(path).is_absolute() or ".." in Path(path).parts:
        raise ValueError(f"{entry}: {path}: path must stay inside the weights directory")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise ValueError(f"{entry}: {path}: size must be a non-negative integer")
    return WeightFile(path=path, sha256=sha256, size=size, entry=entry, remote=remote, hub_pin=hub_pin)


def _hub_entry(name: str, table: dict, section: str = "hub") -> HubEntry:
    _check_keys(f"{section}.{name}", table, {"repo", "revision", "target", "files", "digests"})
    digests = table.get("digests", DIGESTS_FROM_MANIFEST)
    if digests not in (DIGESTS_FROM_MANIFEST, DIGESTS_FROM_HUB):
        allowed = f'"{DIGESTS_FROM_MANIFEST}" or "{DIGESTS_FROM_HUB}"'
        raise ValueError(f"[{section}.{name}]: digests must be {allowed}, got {digests!r}")
    from_hub = digests == DIGESTS_FROM_HUB
    pin = f"{table['repo']}@{table['revision']}" if from_hub else None
    target = table.get("target", "")
    files = []
    for item in table["files"]:
        if from_hub and set(item) - {"path"}:  # a listed digest would be a second, unchecked source of truth
            raise ValueError(f'[{section}.{name}] {item.get("path")}: digests = "hub" lists paths only, '
                             f"remove {sorted(set(item) - {'path'})}")
        _check_keys(f"hub.{name} file", item, {"path", "sha256", "size"})
        local = (Path(target) / item["path"]).as_posix() if target else item["path"]
        sha256 = None if from_hub else item["sha256"]
        files.append(_file(name, local, sha256, item.get("size"), remote=item["path"], hub_pin=pin))
    return HubEntry(name=name, repo=table["repo"], revision=table["revision"], target=target, files=tuple(files),
                    digests=digests, lora=section == "lora")


def _url_entry(name: str, table: dict) -> UrlEntry:
    _check_keys(f"url.{name}", table, {"url", "sha256", "size", "path"})
    url = table["url"]
    if not url.startswith("https://"):
        raise ValueError(f"url.{name}: only https URLs are allowed")
    return UrlEntry(name=name, url=url, file=_file(name, table["path"], table["sha256"], table.get("size"), url))


def _check_keys(where: str, table: dict, allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ValueError(f"[{where}]: unknown keys {sorted(unknown)}")


# ---------------------------------------------------------------------------------------- locations


def default_weights_dir() -> Path:
    """``$ACESTEP_WEIGHTS_DIR``, else ``~/.cache/acestep-app/weights``."""
    if os.environ.get(WEIGHTS_DIR_ENV):
        return Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()
    return Path.home() / ".cache" / "acestep-app" / "weights"


def weights_cache_dir(settings: Settings) -> Path:
    """Where ``pull`` keeps the pinned weights: ``[weights].cache_dir``, else ``default_weights_dir()``."""
    if settings.weights.cache_dir:
        return Path(settings.weights.cache_dir).expanduser()
    return default_weights_dir()


def resolve_weights_dir(settings: Settings) -> Path:
    """The checkpoint folder to load: ``[engine].weights_dir`` if set, else the pull cache."""
    if settings.engine.weights_dir:
        return Path(settings.engine.weights_dir).expanduser()
    return weights_cache_dir(settings)


def ensure_weights(
    settings: Settings, progress: bool = True, only: Collection[str] | None = None, manifest: Manifest | None = None
) -> Path:
    """A checkpoint folder ready to load.

    An explicit ``[engine].weights_dir`` is used as is (tiny or pre-mounted checkpoints are not
    pinned); otherwise the pinned weights are pulled into the cache (a no-op when verified before).
    """
    if settings.engine.weights_dir:
        return resolve_weights_dir(settings)
    manifest = manifest or Manifest.load()
    check_pin(settings, manifest)
    return pull(weights_cache_dir(settings), progress=progress, only=only, manifest=manifest)


LYRIC_VOCAB_PATH = Path("lyric_tokenizer") / "vocab.json"


def find_lyric_vocab(checkpoint: Path, settings: Settings) -> Path:
    """The lyric vocabulary for ``checkpoint``: ``[engine].lyric_vocab``, else the checkpoint's own
    ``lyric_tokenizer/vocab.json``, else the one ``acestep-app weights pull`` put in the weights cache.

    The official checkpoint layout (e.g. a Hugging Face snapshot of ACE-Step-v1-3.5B) has none; the
    error then names the missing path and both fixes.
    """
    if settings.engine.lyric_vocab:
        configured = Path(settings.engine.lyric_vocab).expanduser()
        if configured.is_file():
            return configured
        raise WeightsError(f"[engine].lyric_vocab is {configured}, which does not exist")
    candidates = list(dict.fromkeys([Path(checkpoint) / LYRIC_VOCAB_PATH, weights_cache_dir(settings) / LYRIC_VOCAB_PATH]))
    for path in candidates:
        if path.is_file():
            return path
    raise WeightsError(
        f"no lyric vocabulary at {' or '.join(map(str, candidates))} (a checkpoint in the official layout has "
        "none). Fix: fetch the pinned one with `acestep-app weights pull --only lyric_vocab`, "
        "or point [engine].lyric_vocab in infra.toml at a vocab.json"
    )


def check_pin(settings: Settings, manifest: Manifest) -> None:
    """Fail when ``infra.toml`` pins another checkpoint than the manifest has digests for."""
    entry = manifest.hub.get(ACESTEP_ENTRY)
    pinned = (settings.weights.repo, settings.weights.revision)
    if entry is None or (entry.repo, entry.revision) != pinned:
        have = (entry.repo, entry.revision) if entry else None
        raise WeightsError(
            f"infra.toml pins {pinned[0]}@{pinned[1]} but weights/manifest.toml has digests for {have}; "
            "update both together"
        )


# ------------------------------------------------------------------------------------------- checks


def sha256_file(path: Path, progress: bool = False) -> str:
    return hash_file(path, progress=progress)[SHA256]


def hash_file(path: Path, progress: bool = False, git_blob: bool = False) -> dict[str, str]:
    """``{SHA256: hex}``, plus ``{GIT_BLOB_SHA1: hex}`` (sha1 of ``b"blob <len>\\0" + content``) if asked."""
    size = path.stat().st_size
    digests = {SHA256: hashlib.sha256()}
    if git_blob:
        digests[GIT_BLOB_SHA1] = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    show = progress and size > (256 << 20)
    with open(path, "rb") as handle, tqdm(
        total=size, unit="B", unit_scale=True, desc=f"sha256 {path.name}", disable=not show, leave=False
    ) as bar:
        while chunk := handle.read(_HASH_CHUNK):
            for digest in digests.values():
                digest.update(chunk)
            bar.update(len(chunk))
    return {name: digest.hexdigest() for name, digest in digests.items()}


class _Stamps:
    """The record of files whose digest was checked, keyed by relative path (thread-safe).

    An entry holds the file's sha256, size and mtime; for a ``digests = "hub"`` file also ``hub``,
    the repo@revision whose Hub metadata it was verified against, which makes its sha256 the
    expected digest for later offline checks.
    """

    def __init__(self, root: Path):
        self.path = root / STAMP_FILE
        self.lock = threading.Lock()
        try:
            self.entries: dict[str, dict] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}

    def hub_sha256(self, file: WeightFile) -> str | None:
        """The sha256 recorded when ``file`` was verified against the Hub at its pinned revision."""
        entry = self.entries.get(file.path) or {}
        return entry.get("sha256") if file.hub_pin is not None and entry.get("hub") == file.hub_pin else None

    def trusts(self, file: WeightFile, local: Path, expected: Expected) -> bool:
        entry = self.entries.get(file.path)
        if entry is None or expected.algorithm != SHA256 or entry.get("sha256") != expected.digest:
            return False
        if not local.is_file():
            return False
        stat = local.stat()
        return entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns

    def record(self, file: WeightFile, local: Path, sha256: str) -> None:
        stat = local.stat()
        entry = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        if file.hub_pin is not None:
            entry["hub"] = file.hub_pin
        with self.lock:
            self.entries[file.path] = entry

    def forget(self, file: WeightFile) -> None:
        """Stop trusting the local copy; a digest verified against the Hub stays the expected one."""
        with self.lock:
            entry = self.entries.pop(file.path, None)
            if entry and file.hub_pin is not None and entry.get("hub") == file.hub_pin:
                self.entries[file.path] = {"sha256": entry["sha256"], "hub": entry["hub"]}

    def save(self) -> None:
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)


def _offline_expected(file: WeightFile, stamps: _Stamps) -> Expected | None:
    """What ``file`` must hash to without asking the network (None: never verified against the Hub)."""
    if file.sha256 is not None:
        return Expected(file.sha256, SHA256, file.size, "the manifest")
    recorded = stamps.hub_sha256(file)
    if recorded is None:
        return None
    source = f"the digest recorded when pull verified it against the Hub at {file.hub_pin}"
    return Expected(recorded, SHA256, None, source)


def _problem(
    file: WeightFile,
    local: Path,
    stamps: _Stamps,
    quick: bool,
    progress: bool,
    expected: Expected | None = None,
) -> str | None:
    """Why ``local`` is not the pinned ``file`` (None when it is); records good files in ``stamps``.

    ``expected`` defaults to the offline digest (manifest, or the one recorded from the Hub).
    """
    if not local.is_file():
        return f"{file.path}: missing"
    expected = expected or _offline_expected(file, stamps)
    if expected is None:
        return (f"{file.path}: never verified against the Hub ({file.hub_pin}); "
                "run `acestep-app weights pull` with network access to check it")
    if quick and stamps.trusts(file, local, expected):
        return None
    size = local.stat().st_size
    actual = hash_file(local, progress=progress, git_blob=expected.algorithm == GIT_BLOB_SHA1)
    size_differs = expected.size is not None and size != expected.size
    if actual[expected.algorithm] != expected.digest or size_differs:
        stamps.forget(file)
        sizes = f" (size {size} bytes, expected {expected.size})" if size_differs else ""
        source = "" if expected.source == "the manifest" else f" (from {expected.source})"
        return (f"{file.path}: {expected.algorithm} mismatch: expected {expected.digest}, "
                f"got {actual[expected.algorithm]}{sizes}{source}")
    stamps.record(file, local, actual[SHA256])
    return None


def find_problems(
    weights_dir: str | os.PathLike,
    manifest: Manifest | None = None,
    only: Collection[str] | None = None,
    quick: bool = False,
    progress: bool = False,
) -> list[str]:
    """One line per missing or bad file (empty when all match the manifest)."""
    root = Path(weights_dir)
    manifest = manifest or Manifest.load()
    stamps = _Stamps(root)
    files = manifest.files(only)
    with ThreadPoolExecutor(max_workers=_MAX_WORKERS) as pool:
        results = list(pool.map(lambda f: _problem(f, root / f.path, stamps, quick, progress), files))
    if root.is_dir():
        stamps.save()
    return [problem for problem in results if problem]


def verify(
    weights_dir: str | os.PathLike,
    manifest: Manifest | None = None,
    only: Collection[str] | None = None,
    quick: bool = False,
    progress: bool = False,
) -> None:
    """Raise ``WeightsError`` naming every missing or bad file under ``weights_dir``."""
    problems = find_problems(weights_dir, manifest, only=only, quick=quick, progress=progress)
    if problems:
        raise WeightsError(f"weights in {weights_dir} do not match the manifest:\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------------------------- pull


def pull(
    dest: str | os.PathLike | None = None,
    progress: bool = True,
    only: Collection[str] | None = None,
    manifest: Manifest | None = None,
    token: str | None = None,
) -> Path:
    """Download every manifest file missing or wrong under ``dest`` and check its digest.

    Hub files come from ``huggingface_hub.hf_hub_download`` at the pinned revision into ``dest``
    (resumable: interrupted downloads continue; ``HF_TOKEN`` or ``token`` authenticates); URL files
    via ``httpx``. Files already verified are not touched, so a warm call needs no network. One
    ``hf_hub_download`` per file (up to 4 at once) rather than ``snapshot_download(allow_patterns=...)``
    so a single bad file is re-fetched alone (``force_download``) and failures are reported per file.
    Files of ``digests = "hub"`` entries that need checking get their expected digest from the Hub's
    metadata at the pinned revision first (one ``get_paths_info`` call per entry).

    Returns:
        ``dest`` (default ``default_weights_dir()``).

    Raises:
        WeightsError: naming each file that could not be fetched or whose digest differs
        (expected and actual digest), or the entry whose Hub metadata could not be read.
    """
    root = Path(dest) if dest is not None else default_weights_dir()
    manifest = manifest or Manifest.load()
    token = token or os.environ.get("HF_TOKEN") or None
    root.mkdir(parents=True, exist_ok=True)
    stamps = _Stamps(root)

    files = manifest.files(only)
    todo = [f for f in files if _problem(f, root / f.path, stamps, quick=True, progress=progress)]
    if not todo:
        stamps.save()
        logger.info("weights in %s verified (%d files)", root, len(files))
        return root
    expected, unavailable, problems = _hub_digests(todo, manifest, token)
    # files present but never verified against the Hub: adopt them when they match its digest
    unchecked = [f for f in todo if f.path in expected and stamps.hub_sha256(f) is None and (root / f.path).is_file()]
    adopted = {f.path for f in unchecked if not _problem(f, root / f.path, stamps, False, progress, expected[f.path])}
    todo = [f for f in todo if f.path not in adopted and f.path not in unavailable]
    _check_free_space(root, todo, expected)
    logger.info("fetching %d of %d weight files into %s", len(todo), len(files), root)

    def fetch(file: WeightFile) -> str | None:
        try:
            _fetch(file, root, manifest, token=token, progress=progress)
        except Exception as error:  # network, auth, disk: report per file
            return f"{file.path}: download failed: {type(error).__name__}: {error}"
        local = root / file.path
        return _problem(file, local, stamps, quick=False, progress=progress, expected=expected.get(file.path))

    try:
        with ThreadPoolExecutor(max_workers=_MAX_WORKERS) as pool:
            failures = [*problems, *(p for p in pool.map(fetch, todo) if p)]
    finally:
        stamps.save()
    if failures:
        raise WeightsError(f"pull into {root} failed:\n  " + "\n  ".join(failures))
    return root


def _hub_digests(
    files: list[WeightFile], manifest: Manifest, token: str | None
) -> tuple[dict[str, Expected], set[str], list[str]]:
    """The Hub's digests for the ``digests = "hub"`` files among ``files``, read before downloading.

    Returns ``(expected digest by path, paths without one, problems)``: files whose entry's metadata
    could not be read (one problem per entry) or that the Hub does not list at the pinned revision
    are not downloaded, since nothing could check them.
    """
    expected: dict[str, Expected] = {}
    unavailable: set[str] = set()
    problems: list[str] = []
    for entry in manifest.hub.values():
        wanted = [f for f in files if f.entry == entry.name and f.hub_pin is not None]
        if not wanted:
            continue
        try:
            infos = _hub_paths_info(entry, [f.remote for f in wanted], token)
        except Exception as error:  # network, auth, unknown revision: the other entries still download
            unavailable.update(f.path for f in wanted)
            problems.append(
                f"[hub.{entry.name}]: cannot read its file digests from the Hub ({entry.repo}@{entry.revision}): "
                f"{type(error).__name__}: {error}"
            )
            continue
        by_path = {info.path: info for info in infos}
        source = f"the Hub at {entry.repo}@{entry.revision}"
        for file in wanted:
            info = by_path.get(file.remote)
            if info is None or not hasattr(info, "blob_id"):
                unavailable.add(file.path)
                problems.append(f"{file.path}: not a file of {entry.repo} at revision {entry.revision}")
            elif info.lfs is not None:
                expected[file.path] = Expected(info.lfs.sha256, SHA256, info.size, source)
            elif getattr(info, "xet_hash", None):  # its git blob is a pointer, not the content
                unavailable.add(file.path)
                problems.append(f"{file.path}: the Hub gives no sha256 for it at {entry.revision}")
            else:  # small files live in git itself: the Hub gives their git blob sha1
                expected[file.path] = Expected(info.blob_id, GIT_BLOB_SHA1, info.size, source)
    return expected, unavailable, problems


def _hub_paths_info(entry: HubEntry, paths: list[str], token: str | None) -> list:
    from huggingface_hub import HfApi

    return HfApi(token=token).get_paths_info(entry.repo, paths, revision=entry.revision, expand=True)


def _fetch(file: WeightFile, root: Path, manifest: Manifest, token: str | None, progress: bool) -> None:
    local = root / file.path
    stale = local.is_file()  # present but failed its check: replace it
    entry = manifest.hub.get(file.entry)
    if entry is not None:
        _hub_download(entry, file, root, token=token, progress=progress, force=stale)
    else:
        data = _http_get(manifest.url[file.entry].url)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".incomplete")
        tmp.write_bytes(data)
        os.replace(tmp, local)


def _hub_download(
    entry: HubEntry, file: WeightFile, root: Path, token: str | None, progress: bool, force: bool
) -> None:
    from huggingface_hub import hf_hub_download

    local_dir = root / entry.target if entry.target else root
    hf_hub_download(
        repo_id=entry.repo,
        filename=file.remote,
        revision=entry.revision,
        local_dir=local_dir,
        token=token,
        force_download=force,
        tqdm_class=None if progress else _SilentTqdm,
    )


class _SilentTqdm(tqdm):
    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _http_get(url: str) -> bytes:
    import httpx

    response = httpx.get(url, follow_redirects=True, timeout=60.0)
    response.raise_for_status()
    return response.content


def _check_free_space(root: Path, files: list[WeightFile], expected: Mapping[str, Expected]) -> None:
    def size(file: WeightFile) -> int:
        return file.size or (expected[file.path].size if file.path in expected else None) or 0

    needed = sum(size(f) for f in files if not (root / f.path).exists())
    free = shutil.disk_usage(root).free
    if needed > free:
        raise WeightsError(f"not enough disk space in {root}: need {needed / 1e9:.2f} GB, {free / 1e9:.2f} GB free")
