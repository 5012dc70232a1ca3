"""Pinned weights: the manifest, ``pull`` (download + sha256 check) and ``verify``.

The manifest (``weights/manifest.toml``; a packaged copy ships inside ``acestep_app/data``) lists
every file with its sha256: ``[hub.<name>]`` entries are files of a Hugging Face repo at a pinned
commit, ``[url.<name>]`` entries single files fetched over HTTPS (the lyric vocabulary). Entries
land in one weights directory that has the official checkpoint layout at its root, so the models'
``from_pretrained`` read it directly.

A successful check is remembered in ``.acestep-verified.json`` (digest, size and mtime per file),
so a warm restart's ``pull`` trusts unchanged files without hashing 8 GB again and needs no network.
``verify`` rehashes everything unless ``quick=True``.
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
REPO_MANIFEST_PATH = Path(__file__).resolve().parents[1] / "weights" / "manifest.toml"
PACKAGED_MANIFEST_PATH = Path(__file__).resolve().parent / "data" / "manifest.toml"
STAMP_FILE = ".acestep-verified.json"
_HASH_CHUNK = 8 << 20
_MAX_WORKERS = 4


@dataclass(frozen=True)
class WeightFile:
    """One file of the weights directory and where it comes from."""

    path: str  # relative to the weights directory
    sha256: str
    size: int | None
    entry: str  # manifest entry name
    remote: str  # path inside the hub repo, or the URL


@dataclass(frozen=True)
class HubEntry:
    name: str
    repo: str
    revision: str
    target: str
    files: tuple[WeightFile, ...]


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
        unknown = set(data) - {"hub", "url"}
        if unknown:
            raise ValueError(f"unknown sections {sorted(unknown)} (expected [hub.<name>] and [url.<name>])")
        hub = {name: _hub_entry(name, table) for name, table in data.get("hub", {}).items()}
        url = {name: _url_entry(name, table) for name, table in data.get("url", {}).items()}
        manifest = cls(hub=hub, url=url)
        paths = [f.path for f in manifest.files()]
        duplicates = sorted({p for p in paths if paths.count(p) > 1})
        if duplicates:
            raise ValueError(f"files listed twice: {duplicates}")
        return manifest

    def names(self) -> list[str]:
        return [*self.hub, *self.url]

    def files(self, only: Collection[str] | None = None) -> list[WeightFile]:
        """Every file of the entries named in ``only`` (default: all entries)."""
        if only is not None:
            unknown = set(only) - set(self.names())
            if unknown:
                raise WeightsError(f"unknown manifest entries {sorted(unknown)}; known: {self.names()}")
        files = [f for entry in self.hub.values() for f in entry.files] + [entry.file for entry in self.url.values()]
        return [f for f in files if only is None or f.entry in only]


def _file(entry: str, path: str, sha256: str, size: int | None, remote: str) -> WeightFile:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"{entry}: {path}: sha256 must be 64 lowercase hex digits")
    if Path(path).is_absolute() or ".." in Path(path).parts:
        raise ValueError(f"{entry}: {path}: path must stay inside the weights directory")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise ValueError(f"{entry}: {path}: size must be a non-negative integer")
    return WeightFile(path=path, sha256=sha256, size=size, entry=entry, remote=remote)


def _hub_entry(name: str, table: dict) -> HubEntry:
    _check_keys(f"hub.{name}", table, {"repo", "revision", "target", "files"})
    target = table.get("target", "")
    files = []
    for item in table["files"]:
        _check_keys(f"hub.{name} file", item, {"path", "sha256", "size"})
        local = (Path(target) / item["path"]).as_posix() if target else item["path"]
        files.append(_file(name, local, item["sha256"], item.get("size"), remote=item["path"]))
    return HubEntry(name=name, repo=table["repo"], revision=table["revision"], target=target, files=tuple(files))


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
    digest = hashlib.sha256()
    size = path.stat().st_size
    show = progress and size > (256 << 20)
    with open(path, "rb") as handle, tqdm(
        total=size, unit="B", unit_scale=True, desc=f"sha256 {path.name}", disable=not show, leave=False
    ) as bar:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


class _Stamps:
    """The record of files whose digest was checked, keyed by relative path (thread-safe)."""

    def __init__(self, root: Path):
        self.path = root / STAMP_FILE
        self.lock = threading.Lock()
        try:
            self.entries: dict[str, dict] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}

    def trusts(self, file: WeightFile, local: Path) -> bool:
        entry = self.entries.get(file.path)
        if entry is None or entry.get("sha256") != file.sha256 or not local.is_file():
            return False
        stat = local.stat()
        return entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns

    def record(self, file: WeightFile, local: Path) -> None:
        stat = local.stat()
        with self.lock:
            self.entries[file.path] = {"sha256": file.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def forget(self, file: WeightFile) -> None:
        with self.lock:
            self.entries.pop(file.path, None)

    def save(self) -> None:
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)


def _problem(file: WeightFile, local: Path, stamps: _Stamps, quick: bool, progress: bool) -> str | None:
    """Why ``local`` is not the pinned ``file`` (None when it is); records good files in ``stamps``."""
    if not local.is_file():
        return f"{file.path}: missing"
    if quick and stamps.trusts(file, local):
        return None
    size = local.stat().st_size
    actual = sha256_file(local, progress=progress)
    if actual != file.sha256 or (file.size is not None and size != file.size):
        stamps.forget(file)
        sizes = f" (size {size} bytes, expected {file.size})" if file.size is not None and size != file.size else ""
        return f"{file.path}: sha256 mismatch: expected {file.sha256}, got {actual}{sizes}"
    stamps.record(file, local)
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
    """Download every manifest file missing or wrong under ``dest`` and check its sha256.

    Hub files come from ``huggingface_hub.hf_hub_download`` at the pinned revision into ``dest``
    (resumable: interrupted downloads continue; ``HF_TOKEN`` or ``token`` authenticates); URL files
    via ``httpx``. Files already verified are not touched, so a warm call needs no network. One
    ``hf_hub_download`` per file (up to 4 at once) rather than ``snapshot_download(allow_patterns=...)``
    so a single bad file is re-fetched alone (``force_download``) and failures are reported per file.

    Returns:
        ``dest`` (default ``default_weights_dir()``).

    Raises:
        WeightsError: naming each file that could not be fetched or whose digest differs
        (expected and actual sha256).
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
    _check_free_space(root, todo)
    logger.info("fetching %d of %d weight files into %s", len(todo), len(files), root)

    def fetch(file: WeightFile) -> str | None:
        try:
            _fetch(file, root, manifest, token=token, progress=progress)
        except Exception as error:  # network, auth, disk: report per file
            return f"{file.path}: download failed: {type(error).__name__}: {error}"
        return _problem(file, root / file.path, stamps, quick=False, progress=progress)

    try:
        with ThreadPoolExecutor(max_workers=_MAX_WORKERS) as pool:
            problems = [p for p in pool.map(fetch, todo) if p]
    finally:
        stamps.save()
    if problems:
        raise WeightsError(f"pull into {root} failed:\n  " + "\n  ".join(problems))
    return root


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


def _check_free_space(root: Path, files: list[WeightFile]) -> None:
    needed = sum(f.size or 0 for f in files if not (root / f.path).exists())
    free = shutil.disk_usage(root).free
    if needed > free:
        raise WeightsError(f"not enough disk space in {root}: need {needed / 1e9:.2f} GB, {free / 1e9:.2f} GB free")
