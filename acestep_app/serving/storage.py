"""Generated audio files under the server's data dir, one file per request, named by request id.

The extension is the file's format (``[output].format``: wav, flac, mp3 or ogg); the content type
served follows from it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from acestep_app.audio.formats import AUDIO_FORMATS, audio_format

FILES_PREFIX = "files/"  # a stored file's URL in a result, relative to the host (``files/<request id>.wav``)

# Only names this store wrote can ever be resolved: no separators, no dots besides the suffix.
FILE_NAME = re.compile(
    r"^(?P<request_id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.(?P<format>"
    + "|".join(AUDIO_FORMATS) + r")\Z"
)


@dataclass(frozen=True)
class StoredFile:
    file_name: str
    path: Path
    size: int
    content_type: str = "audio/wav"

    @classmethod
    def at(cls, path: Path, size: int) -> StoredFile:
        return cls(file_name=path.name, path=path, size=size, content_type=audio_format(path.suffix).content_type)


class AudioStore:
    """Writes files atomically (temp file + rename), so a crash never leaves a half-written file."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def save(self, request_id: str, data: bytes, fmt: str = "wav") -> StoredFile:
        """Store ``data`` (a file in format ``fmt``) as ``<request_id>.<fmt>``."""
        file_name = f"{request_id}{audio_format(fmt).extension}"
        if not FILE_NAME.match(file_name):
            raise ValueError(f"not a request id: {request_id!r}")
        path = self.root / file_name
        partial = path.with_name(file_name + ".partial")
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)
        return StoredFile.at(path, len(data))

    def open(self, file_name: str) -> StoredFile | None:
        """The stored file for a name from a URL, or None (unknown or not a name this store writes)."""
        if not FILE_NAME.match(file_name):
            return None
        path = self.root / file_name
        if not path.is_file():
            return None
        return StoredFile.at(path, path.stat().st_size)

    @staticmethod
    def request_id_of(file_name: str) -> str | None:
        match = FILE_NAME.match(file_name)
        return match["request_id"] if match else None
