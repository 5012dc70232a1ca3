"""Generated audio files under the server's data dir, one file per request, named by request id.

The extension is the file's format (``[output].format``: wav, flac, mp3 or ogg); the content type
served follows from it. The data dir and its folders are private to the server's user (0700), and
so is every file written in them (0600): :func:`private_dir`, :func:`private_file`.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from acestep_app.audio.formats import AUDIO_FORMATS, audio_format

logger = logging.getLogger(__name__)

AUDIO_DIR = "files"  # a data dir's generated audio
INPUTS_DIR = "inputs"  # a data dir's inline input files (acestep_app.serving.inputs)
OWNER_SECRET_FILE = "owner-secret"  # the key of the owner ids (acestep_app.serving.auth)
FILES_PREFIX = "files/"  # a stored file's URL in a result, relative to the host (``files/<request id>.wav``)

# Only names this store wrote can ever be resolved: no separators, no dots besides the suffix.
FILE_NAME = re.compile(
    r"^(?P<request_id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.(?P<format>"
    + "|".join(AUDIO_FORMATS) + r")\Z"
)


def private_dir(path: str | Path) -> Path:
    """``path`` as a directory only its owner can enter (0700); an existing one of ours is tightened.

    A directory this user does not own, or a shared one (sticky bit, like /tmp), is left as it is.
    """
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_mode & 0o077 and info.st_uid == os.getuid() and not info.st_mode & stat.S_ISVTX:
        logger.info("making %s private to its owner (mode 0700)", path)
        os.chmod(path, 0o700)
    return path


def private_file(path: str | Path) -> Path:
    """``path`` created empty if absent, and readable by its owner only (0600)."""
    path = Path(path)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename), mode 0600."""
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)


def secret_in(path: Path, size: int = 32) -> bytes:
    """The random secret kept in ``path`` (mode 0600), made on first use; a file another process wrote first wins."""
    if not path.exists():
        candidate = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(size))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(candidate, path)  # atomic, never replaces a secret already there
        except FileExistsError:
            pass
        finally:
            candidate.unlink(missing_ok=True)
    return path.read_bytes()


def remove_older(folder: Path, before: float, keep: Iterable[str] = ()) -> int:
    """Delete the plain files in ``folder`` last modified before ``before`` (Unix time), except ``keep``."""
    kept, removed = set(keep), 0
    for entry in os.scandir(folder) if folder.is_dir() else ():
        if entry.is_file(follow_symlinks=False) and entry.name not in kept and entry.stat().st_mtime < before:
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed


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
        self.root = private_dir(root)

    def save(self, request_id: str, data: bytes, fmt: str = "wav") -> StoredFile:
        """Store ``data`` (a file in format ``fmt``) as ``<request_id>.<fmt>``."""
        file_name = f"{request_id}{audio_format(fmt).extension}"
        if not FILE_NAME.match(file_name):
            raise ValueError(f"not a request id: {request_id!r}")
        path = self.root / file_name
        write_private(path, data)
        return StoredFile.at(path, len(data))

    def delete(self, request_id: str) -> int:
        """Delete the request's files (any format); how many there were."""
        removed = 0
        for fmt in AUDIO_FORMATS:
            path = self.root / f"{request_id}{audio_format(fmt).extension}"
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def prune(self, request_ids: Iterable[str], before: float | None = None) -> int:
        """Delete the files of ``request_ids``, and any file (a leftover) last written before ``before``."""
        removed = sum(self.delete(request_id) for request_id in request_ids)
        return removed + (remove_older(self.root, before) if before is not None else 0)

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
