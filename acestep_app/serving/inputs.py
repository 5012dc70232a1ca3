"""Input audio sent inline (``data:`` URIs) is kept out of the job record.

A request may carry a whole song as a base64 ``data:`` URI (fal accepts them). Kept in the job's
``input``, it would sit in the database for as long as the job (a 19 MiB request once grew it by
40 MB, plus as much WAL). Instead, at submit, every ``data:`` URI in the request is decoded (a
malformed or oversized one is refused then, before the job exists), hashed, and its bytes written
once to ``inputs/<token>`` in the data dir (mode 0600). The job's ``input`` then holds only
``data:<media type>;sha256,<digest>``, and its ``input_files`` where each file goes back. The run
restores the URIs from the files (checking each digest), the files are deleted when the job ends,
and the retention pruning removes any a crash left behind.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acestep_app.audio.source import DATA_URI, decode_data_uri, echoed
from acestep_app.errors import InputError
from acestep_app.serving.storage import private_dir, remove_older, write_private

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class InlineFile:
    """One ``data:`` URI taken out of a request: where it was, its media type, its bytes' SHA-256, its file."""

    path: Path_
    media_type: str
    sha256: str
    name: str

    def to_json(self) -> dict[str, Any]:
        return {"path": list(self.path), "media_type": self.media_type, "sha256": self.sha256, "name": self.name}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InlineFile:
        return cls(tuple(data["path"]), data["media_type"], data["sha256"], data["name"])


def data_uris(value: Any, path: Path_ = ()):
    """``(path, uri)`` for every ``data:`` string in a JSON value (dicts and lists walked)."""
    if isinstance(value, str):
        if value[:5].lower() == "data:":
            yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from data_uris(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from data_uris(item, (*path, index))


def replace_at(payload: Any, path: Path_, value: Any) -> None:
    for key in path[:-1]:
        payload = payload[key]
    payload[path[-1]] = value


class InputFiles:
    """The ``inputs/`` folder of a data dir (or of a Modal Volume)."""

    def __init__(self, root: str | Path, max_bytes: int):
        self.root = private_dir(root)
        self.max_bytes = max_bytes

    def stash(self, payload: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``payload`` with its ``data:`` URIs replaced by digests, and the files that hold them.

        Raises the audio input errors of :func:`acestep_app.audio.source.decode_data_uri` (422s naming
        the field) for a URI that is malformed or larger than ``max_bytes``.
        """
        found = list(data_uris(payload))
        if not found:
            return payload, []
        payload = copy.deepcopy(payload)
        stashed = []
        for path, uri in found:
            field = ".".join(map(str, path))
            try:
                data = decode_data_uri(uri, self.max_bytes, field)
            except InputError as error:
                error.input = echoed(uri)
                raise
            media_type = DATA_URI.match(uri)["media_type"].split(";")[0] or "application/octet-stream"
            digest = hashlib.sha256(data).hexdigest()
            name = f"{digest[:16]}-{secrets.token_hex(8)}"
            write_private(self.root / name, data)
            replace_at(payload, path, f"data:{media_type};sha256,{digest}")
            stashed.append(InlineFile(path, media_type, digest, name).to_json())
        return payload, stashed

    def restore(self, payload: dict[str, Any], files: list[dict[str, Any]]) -> dict[str, Any]:
        """``payload`` with each stashed file back as its ``data:`` URI (a file gone or altered is an error)."""
        if not files:
            return payload
        payload = copy.deepcopy(payload)
        for file in map(InlineFile.from_json, files):
            data = (self.root / file.name).read_bytes()
            if hashlib.sha256(data).hexdigest() != file.sha256:
                raise RuntimeError(f"the stored input {file.name} does not match its digest")
            replace_at(payload, file.path, f"data:{file.media_type};base64,{base64.b64encode(data).decode('ascii')}")
        return payload

    def discard(self, files: list[dict[str, Any]]) -> None:
        """Delete a finished job's stashed files."""
        for file in map(InlineFile.from_json, files):
            (self.root / file.name).unlink(missing_ok=True)

    def prune(self, before: float) -> int:
        """Delete files last written before ``before`` (left by a crash between stash and job, or a lost job)."""
        return remove_older(self.root, before)
