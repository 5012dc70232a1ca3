"""Where an adapter comes from: an https URL, a Hugging Face repo, a local path or a pinned manifest entry.

:func:`parse_source` reads the ``path`` of a ``loras`` entry (or of ``[[lora.adapters]]`` / ``--lora``):

* ``https://...`` (or ``http://``): one ``.safetensors`` file, downloaded through
  :mod:`acestep_app.audio.netguard` (the ``[security]`` address rule, ``[lora].max_download_bytes``,
  ``[lora].download_timeout_seconds``, ``[audio_input].max_redirects``).
* ``owner/name[@revision][/sub/path]``: a Hub repo. Its file list comes from the Hub API (at
  ``revision``, default the main branch, resolved to a commit); the adapter is ``sub/path`` when that
  names a ``.safetensors`` file, else the folder's ``pytorch_lora_weights.safetensors``,
  ``adapter_model.safetensors`` or only ``.safetensors`` file, with its ``adapter_config.json`` (or a
  LoRA ``config.json``). Files are downloaded through the same guard, with the same limits.
* trusted callers only (infra.toml, the CLI): a local file or folder (absolute, ``./``, ``../``,
  ``~`` or an existing path), or the name of a ``[lora.<name>]`` manifest entry (``rapmachine``),
  pulled pinned and digest-checked into the weights dir.

Requests cannot name local paths or manifest entries: the server's disk is not theirs to read.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from acestep_app.lora.adapter import CONFIG_NAMES, WEIGHT_NAMES

URL_SCHEMES = ("https://", "http://")
_NAME = r"[A-Za-z0-9](?:[\w.-]{0,94}[\w])?"
HUB_SPEC = re.compile(rf"^(?P<repo>{_NAME}/{_NAME})(?:@(?P<revision>[\w.-]{{1,100}}))?(?P<subpath>(?:/[\w.+-]+)*)/?$")
PINNED_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
LOCAL_PREFIXES = ("/", "./", "../", "~")


@dataclass(frozen=True)
class Source:
    """A parsed adapter location. ``kind``: ``url`` | ``hub`` | ``local`` | ``pinned``."""

    kind: str
    location: str  # the URL, the repo id, the local path, or the manifest entry name
    revision: str | None = None
    subpath: str = ""

    @property
    def identity(self) -> str:
        """A stable name for the source index (what "fetched once" is keyed on)."""
        return f"{self.kind}:{self.location}@{self.revision or ''}/{self.subpath}"

    @property
    def identity_digest(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()


class SourceError(ValueError):
    """``path`` is not a location this caller may use (the message says what is accepted)."""


def parse_source(text: str, *, trusted: bool, pinned_names: frozenset[str] = frozenset()) -> Source:
    """The :class:`Source` ``text`` names; ``trusted`` allows local paths and ``pinned_names``."""
    text = text.strip()
    if text.lower().startswith(URL_SCHEMES):
        return Source("url", text)
    if trusted:
        if text in pinned_names:
            return Source("pinned", text)
        if text.startswith(LOCAL_PREFIXES) or Path(text).expanduser().exists():
            return Source("local", str(Path(text).expanduser()))
    match = HUB_SPEC.match(text)
    if match is not None:
        return Source("hub", match["repo"], match["revision"], match["subpath"].strip("/"))
    if not trusted and (text.startswith(LOCAL_PREFIXES) or "\\" in text or text.lower().startswith("file:")):
        raise SourceError("local paths are accepted only in infra.toml ([[lora.adapters]]) and on the command line; "
                          "give an https URL or a Hugging Face repo (owner/name)")
    accepted = "an https URL of a .safetensors file or a Hugging Face repo (owner/name[@revision][/path])"
    if trusted:
        accepted += ", a local file or folder"
        if pinned_names:
            accepted += f", or a pinned adapter ({', '.join(sorted(pinned_names))})"
    raise SourceError(f"{text!r} is not {accepted}")


@dataclass(frozen=True)
class RepoFiles:
    """The files a Hub source resolves to at one commit."""

    commit: str
    weights: str  # path in the repo
    weights_size: int | None
    config: str | None = None


def pick_repo_files(source: Source, commit: str, sizes: dict[str, int | None]) -> RepoFiles:
    """Choose the adapter's weights (and config) among a repo's files (``sizes``: path -> bytes)."""
    subpath = source.subpath
    if subpath.endswith(".safetensors"):
        if subpath not in sizes:
            raise SourceError(f"{source.location} has no file {subpath} at {commit[:12]}")
        folder, weights = subpath.rpartition("/")[0], subpath
    else:
        folder = subpath
        inside = [path for path in sizes if path.rpartition("/")[0] == folder]
        named = [f"{folder}/{name}".lstrip("/") for name in WEIGHT_NAMES]
        candidates = [path for path in named if path in sizes] or [p for p in inside if p.endswith(".safetensors")]
        where = f"{source.location}/{folder}" if folder else source.location
        if not candidates:
            raise SourceError(f"{where} holds no .safetensors adapter file (expected {WEIGHT_NAMES[0]})")
        if len(candidates) > 1 and candidates[0] not in named:
            raise SourceError(f"{where} holds several .safetensors files; name one: {where}/<file>.safetensors")
        weights = candidates[0]
    configs = [f"{folder}/{name}".lstrip("/") for name in CONFIG_NAMES]
    config = next((path for path in configs if path in sizes), None)
    return RepoFiles(commit=commit, weights=weights, weights_size=sizes[weights], config=config)


def url_file_name(url: str) -> str:
    """The file name a downloaded URL is stored under (its last path part if it is a .safetensors name)."""
    name = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rpartition("/")[2]
    return name if re.fullmatch(r"[\w.+-]+\.safetensors", name) else WEIGHT_NAMES[0]
