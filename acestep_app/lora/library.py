"""Adapters fetched once, kept by content: the on-disk store and the in-memory LRU of parsed adapters.

Layout under ``[lora].cache_dir`` (default ``<weights cache>/loras``)::

    blobs/<key>/<weights>.safetensors (+ adapter_config.json)   one folder per adapter content
    sources/<sha256 of the source>.json                          source -> key ("fetched once")

``key`` is the sha256 of the weights file, or of ``"<weights sha256>:<config sha256>"`` when a config file
travels with it. A source seen before is served from its blob without touching the network (a Hub repo
named without ``@revision`` is therefore fetched at the commit its main branch had the first time; pin a
revision to change that deliberately). A download that is no usable adapter is not kept, so a file fixed
at the same URL is fetched again. Blobs are evicted least recently used first once they exceed
``[lora].disk_cache_bytes``; parsed adapters likewise past ``[lora].memory_cache_bytes``. Local and
pinned adapters are read where they are (never copied) and hashed once per (size, mtime).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from acestep_app.audio import netguard
from acestep_app.errors import LoraError, WeightsError
from acestep_app.lora.adapter import CONFIG_NAMES, AdapterFormatError, LoraAdapter, find_weights_file, load_adapter, read_config_file
from acestep_app.lora.sources import RepoFiles, Source, SourceError, parse_source, pick_repo_files, url_file_name
from acestep_app.settings import Settings

logger = logging.getLogger(__name__)

_HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class AdapterFiles:
    """A fetched adapter on local disk."""

    weights: Path
    config: Path | None
    key: str
    fetched: bool = False  # downloaded by this load (remembered only once it parses)


def cache_root(settings: Settings) -> Path:
    if settings.lora.cache_dir:
        return Path(settings.lora.cache_dir).expanduser()
    from acestep_app.weights.store import weights_cache_dir

    return weights_cache_dir(settings) / "loras"


def adapter_key(weights_sha256: str, config: Path | None) -> str:
    if config is None:
        return weights_sha256
    return hashlib.sha256(f"{weights_sha256}:{sha256_of(config)}".encode()).hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class AdapterLibrary:
    """``load(path) -> LoraAdapter``: fetch (once), store, parse (once) and check an adapter file.

    Thread-safe: concurrent loads of one source fetch it once. Errors are :class:`LoraError` naming the
    ``loras`` entry (``index``; None for infra.toml and CLI adapters).
    """

    def __init__(self, settings: Settings, root: Path | None = None):
        self.settings = settings
        self.root = root or cache_root(settings)
        self._memory: OrderedDict[str, LoraAdapter] = OrderedDict()
        self._lock = threading.Lock()
        self._source_locks: dict[str, threading.Lock] = {}
        self._local_keys: dict[tuple, str] = {}

    def load(self, path: str, *, index: int | None = None, trusted: bool = False) -> LoraAdapter:
        try:
            source = parse_source(path, trusted=trusted, pinned_names=pinned_names() if trusted else frozenset())
        except SourceError as error:
            raise LoraError(index, str(error)) from None
        with self._source_lock(source.identity):
            files = self._locate(source, index)
            try:
                adapter = self._parsed(files, index)
            except LoraError:
                if files.fetched:  # not kept: a file fixed at the same URL is fetched again next time
                    self._forget_blob(files.key)
                raise
            if files.fetched:
                self._remember(source, files.key)
                self._evict(keep=files.key)
            return adapter

    # -- where the files are ------------------------------------------------------------------------

    def _locate(self, source: Source, index: int | None) -> AdapterFiles:
        if source.kind == "local":
            return self._local(Path(source.location), index)
        if source.kind == "pinned":
            return self._local(self._pinned_folder(source.location), index)
        known = self._known(source)
        if known is not None:
            return known
        return self._fetch_url(source, index) if source.kind == "url" else self._fetch_hub(source, index)

    def _local(self, path: Path, index: int | None) -> AdapterFiles:
        try:
            weights = path if path.is_file() else find_weights_file(path) if path.is_dir() else None
        except AdapterFormatError as error:
            raise LoraError(index, f"{path}: {error}") from None
        if weights is None:
            raise LoraError(index, f"{path}: no such file or folder")
        config = read_config_path(weights.parent)
        stat = weights.stat()
        memo = (str(weights.resolve()), stat.st_size, stat.st_mtime_ns, str(config))
        key = self._local_keys.get(memo)
        if key is None:
            self._check_size(stat.st_size, index)
            key = self._local_keys[memo] = adapter_key(sha256_of(weights), config)
        return AdapterFiles(weights, config, key)

    def _pinned_folder(self, name: str) -> Path:
        from acestep_app.weights.store import Manifest, pull, weights_cache_dir

        manifest = Manifest.load()
        try:
            root = pull(weights_cache_dir(self.settings), progress=False, only=[name], manifest=manifest)
        except WeightsError as error:
            raise LoraError(None, f"pinned adapter {name!r}: {error}") from None
        return root / manifest.hub[name].target

    def _known(self, source: Source) -> AdapterFiles | None:
        index_file = self.root / "sources" / f"{source.identity_digest}.json"
        try:
            key = json.loads(index_file.read_text())["key"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        blob = self.root / "blobs" / key
        try:
            weights = find_weights_file(blob)
        except (AdapterFormatError, OSError):
            return None  # evicted (or never completed): fetch again
        os.utime(blob)
        config = read_config_path(blob)
        return AdapterFiles(weights, config, key)

    def _remember(self, source: Source, key: str) -> None:
        folder = self.root / "sources"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps({"source": source.identity, "key": key}))
        os.replace(tmp, folder / f"{source.identity_digest}.json")

    # -- downloads ----------------------------------------------------------------------------------

    def _fetch_url(self, source: Source, index: int | None) -> AdapterFiles:
        staging = self._staging()
        try:
            weights = staging / url_file_name(source.location)
            self._download(source.location, weights, index)
            return self._store(staging, weights, None)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _fetch_hub(self, source: Source, index: int | None) -> AdapterFiles:
        from huggingface_hub import hf_hub_url

        chosen = self._list_repo(source, index)
        endpoint = self.settings.lora.hub_endpoint or None
        self._check_size(chosen.weights_size, index)
        headers = hub_headers()
        staging = self._staging()
        try:
            weights = staging / chosen.weights.rpartition("/")[2]
            self._download(hf_hub_url(source.location, chosen.weights, revision=chosen.commit, endpoint=endpoint),
                           weights, index, headers)
            config = None
            if chosen.config is not None:
                config = staging / chosen.config.rpartition("/")[2]
                self._download(hf_hub_url(source.location, chosen.config, revision=chosen.commit, endpoint=endpoint),
                               config, index, headers)
            return self._store(staging, weights, config)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _list_repo(self, source: Source, index: int | None) -> RepoFiles:
        from huggingface_hub import HfApi

        limits = self.settings.lora
        try:
            info = HfApi(endpoint=limits.hub_endpoint or None).model_info(
                source.location, revision=source.revision, files_metadata=True,
                timeout=limits.download_timeout_seconds)
        except Exception as error:  # unknown repo or revision, auth, network: all the caller's to fix
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            revision = f"@{source.revision}" if source.revision else ""
            raise LoraError(index, f"cannot list the Hugging Face repo {source.location}{revision}: {reason}",
                            error_type="file_download_error") from None
        sizes = {sibling.rfilename: sibling.size for sibling in info.siblings or []}
        try:
            return pick_repo_files(source, info.sha or source.revision or "main", sizes)
        except SourceError as error:
            raise LoraError(index, str(error)) from None

    def _download(self, url: str, destination: Path, index: int | None, headers: dict | None = None) -> None:
        limits = self.settings.lora
        try:
            with destination.open("wb") as handle:
                netguard.stream(url, handle.write, allow_private=self.settings.security.allow_private_urls,
                                timeout=limits.download_timeout_seconds, max_bytes=limits.max_download_bytes,
                                max_redirects=self.settings.audio_input.max_redirects, headers=headers)
        except netguard.ResponseTooLarge:
            raise too_large(index, limits.max_download_bytes) from None
        except (netguard.UnsafeURLError, netguard.FetchError) as error:
            raise LoraError(index, f"Failed to download the LoRA file: {error}", error_type="file_download_error") from None

    def _check_size(self, size: int | None, index: int | None) -> None:
        if size is not None and size > self.settings.lora.max_download_bytes:
            raise too_large(index, self.settings.lora.max_download_bytes)

    def _staging(self) -> Path:
        staging = self.root / "tmp" / uuid.uuid4().hex
        staging.mkdir(parents=True)
        return staging

    def _store(self, staging: Path, weights: Path, config: Path | None) -> AdapterFiles:
        """Move the staged files to ``blobs/<key>`` (kept if another fetch put the same content there first)."""
        key = adapter_key(sha256_of(weights), config)
        blob = self.root / "blobs" / key
        blob.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, blob)
        except OSError:
            if not blob.is_dir():
                raise
            os.utime(blob)  # the same content came from another source (its file may have another name)
        return AdapterFiles(find_weights_file(blob), read_config_path(blob), key, fetched=True)

    def _forget_blob(self, key: str) -> None:
        """Drop a fetched blob that is no usable adapter (the same bytes never parse, so nothing maps to it)."""
        shutil.rmtree(self.root / "blobs" / key, ignore_errors=True)

    def _evict(self, keep: str) -> None:
        """Drop least recently used blobs until the store fits ``[lora].disk_cache_bytes`` (``keep`` stays)."""
        blobs = [path for path in (self.root / "blobs").iterdir() if path.is_dir()]
        sizes = {blob: sum(f.stat().st_size for f in blob.iterdir() if f.is_file()) for blob in blobs}
        total = sum(sizes.values())
        for blob in sorted(blobs, key=lambda path: path.stat().st_mtime):
            if total <= self.settings.lora.disk_cache_bytes:
                break
            if blob.name == keep:
                continue
            shutil.rmtree(blob, ignore_errors=True)
            total -= sizes[blob]
            logger.info("LoRA cache: evicted %s (%d bytes)", blob.name, sizes[blob])

    # -- parsed adapters ----------------------------------------------------------------------------

    def _parsed(self, files: AdapterFiles, index: int | None) -> LoraAdapter:
        with self._lock:
            cached = self._memory.get(files.key)
            if cached is not None:
                self._memory.move_to_end(files.key)
                return cached
        try:
            config = read_config_file(files.config.parent) if files.config is not None else None
            adapter = load_adapter(files.weights, files.key, config)
        except AdapterFormatError as error:
            raise LoraError(index, f"not a usable LoRA adapter: {error}") from None
        with self._lock:
            self._memory[files.key] = adapter
            self._trim_memory()
        return adapter

    def _trim_memory(self) -> None:
        budget = self.settings.lora.memory_cache_bytes
        while self._memory and sum(adapter.nbytes for adapter in self._memory.values()) > budget:
            self._memory.popitem(last=False)

    def _source_lock(self, identity: str) -> threading.Lock:
        with self._lock:
            return self._source_locks.setdefault(identity, threading.Lock())


def read_config_path(folder: Path) -> Path | None:
    return next((folder / name for name in CONFIG_NAMES if (folder / name).is_file()), None)


def too_large(index: int | None, max_bytes: int) -> LoraError:
    return LoraError(index, f"The LoRA file is larger than the {max_bytes} bytes allowed.", error_type="file_too_large",
                     ctx={"max_size": max_bytes})


def hub_headers() -> dict[str, str] | None:
    """The Hub token (``HF_TOKEN`` or a saved login) for the Hub's own host; never sent past a redirect."""
    from huggingface_hub import get_token

    token = get_token()
    return {"Authorization": f"Bearer {token}"} if token else None


def pinned_names() -> frozenset[str]:
    """Names of the manifest's ``[lora.<name>]`` entries (``weights pull --lora NAME``)."""
    from acestep_app.weights.store import Manifest

    try:
        return frozenset(Manifest.load().lora_names())
    except WeightsError:
        return frozenset()
