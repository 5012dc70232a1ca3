"""The SQLite plumbing the job store and the webhook outbox share: one connection, used from many threads."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from acestep_app.serving.storage import private_dir, private_file


class SQLiteBacked:
    """A store kept in one SQLite file (WAL), its connection shared by threads under one lock.

    Subclasses call :meth:`_open` from ``__init__`` and write through :meth:`_transaction`. The file
    (and so its WAL, which SQLite creates with the same mode) is readable by its owner only, in a
    data dir only its owner can enter. Deleted rows' pages go back to the file system with
    :meth:`compact`.
    """

    path: Path

    def _open(self, path: Path, schema: str, what: str) -> None:
        self.path = path
        try:
            private_dir(path.parent)
            private_file(path)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file only
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a killed process loses no commit
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(schema)
        except (OSError, sqlite3.Error) as error:
            raise RuntimeError(f"cannot open the {what} at {path}: {error}") from error
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def compact(self) -> None:
        """Give the pages of deleted rows back (incremental vacuum) and truncate the WAL."""
        with self._lock:
            self._db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page per call
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def size_on_disk(self) -> int:
        """Bytes of the database file and its WAL."""
        return sum(os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal")) if os.path.exists(p))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
