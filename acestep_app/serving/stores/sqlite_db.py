"""The SQLite plumbing the job store and the webhook outbox share: one connection, used from many threads."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SQLiteBacked:
    """A store kept in one SQLite file (WAL), its connection shared by threads under one lock.

    Subclasses call :meth:`_open` from ``__init__`` and write through :meth:`_transaction`.
    """

    path: Path

    def _open(self, path: Path, schema: str, what: str) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
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
