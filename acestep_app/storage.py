"""Generated audio files under the server's data dir, one WAV per request, named by request id."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# Only names this store wrote can ever be resolved: no separators, no dots besides the suffix.
FILE_NAME = re.compile(r"^(?P<request_id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.wav$")


@dataclass(frozen=True)
class StoredFile:
    file_name: str
    path: Path
    size: int
    content_type: str = "audio/wav"


class AudioStore:
    """Writes files atomically (temp file + rename), so a crash never leaves a half-written WAV."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def save(self, request_id: str, data: bytes) -> StoredFile:
        file_name = f"{request_id}.wav"
        if not FILE_NAME.match(file_name):
            raise ValueError(f"not a request id: {request_id!r}")
        path = self.root / file_name
        partial = path.with_suffix(".wav.partial")
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)
        return StoredFile(file_name=file_name, path=path, size=len(data))

    def open(self, file_name: str) -> StoredFile | None:
        """The stored file for a name from a URL, or None (unknown or not a name this store writes)."""
        if not FILE_NAME.match(file_name):
            return None
        path = self.root / file_name
        if not path.is_file():
            return None
        return StoredFile(file_name=file_name, path=path, size=path.stat().st_size)

    @staticmethod
    def request_id_of(file_name: str) -> str | None:
        match = FILE_NAME.match(file_name)
        return match["request_id"] if match else None
