"""Retention: what a data dir keeps, and for how long (``[storage].retention_days``).

Finished jobs (their rows and log lines), their audio files, inline input files left behind, and
webhook deliveries that ended are deleted once older than the retention; the freed database pages
go back to the file system. Usage rows are the billing ledger and are never deleted. The local
server prunes every ``[storage].prune_interval_s``; ``acestep-app prune`` does the same on demand.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from acestep_app.serving.inputs import InputFiles
from acestep_app.serving.storage import AUDIO_DIR, INPUTS_DIR, AudioStore
from acestep_app.serving.stores.sqlite import SqliteJobStore
from acestep_app.serving.webhooks.outbox import Outbox
from acestep_app.settings import Settings

logger = logging.getLogger(__name__)

DAY = 86_400.0


@dataclass(frozen=True)
class PruneReport:
    jobs: int
    audio_files: int
    input_files: int
    webhooks: int

    def __str__(self) -> str:
        return (f"pruned {self.jobs} jobs, {self.audio_files} audio files, {self.input_files} input files, "
                f"{self.webhooks} webhook deliveries")


def folder_size(path: str | Path) -> int:
    """Bytes of the plain files under ``path``."""
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


class Retention:
    """Prunes one data dir's store, audio, inputs and outbox (see the module docstring)."""

    def __init__(self, store: SqliteJobStore, audio: AudioStore, inputs: InputFiles, outbox: Outbox | None,
                 retention_days: float, interval_s: float = 3600.0):
        self.store = store
        self.audio = audio
        self.inputs = inputs
        self.outbox = outbox
        self.retention_days = retention_days
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def prune(self, days: float | None = None, now: float | None = None) -> PruneReport:
        """Delete what finished more than ``days`` (default: the retention) ago."""
        before = (time.time() if now is None else now) - DAY * (self.retention_days if days is None else days)
        jobs = self.store.prune(before)
        audio = self.audio.prune([job.request_id for job in jobs])
        audio += self._leftover_audio(before)
        for job in jobs:
            self.inputs.discard(job.input_files)
        report = PruneReport(len(jobs), audio, self.inputs.prune(before),
                             self.outbox.prune(before) if self.outbox is not None else 0)
        logger.info("%s", report)
        return report

    def _leftover_audio(self, before: float) -> int:
        """Audio files older than ``before`` whose job is gone (e.g. a job pruned while its file was written)."""
        removed = 0
        for path in list(self.audio.root.iterdir()):
            request_id = AudioStore.request_id_of(path.name)
            if path.is_file() and path.stat().st_mtime < before and (
                    request_id is None or self.store.get(request_id) is None):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="acestep-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                self.prune()
            except Exception:  # e.g. a full disk; the next round tries again
                logger.exception("pruning the data dir failed")


def prune_data_dir(data_dir: str | Path, settings: Settings, days: float | None = None) -> PruneReport:
    """Prune a data dir from outside the server (``acestep-app prune``); safe while a server uses it."""
    data_dir = Path(data_dir)
    store = SqliteJobStore(data_dir)
    outbox = Outbox(data_dir, settings.webhooks)
    try:
        retention = Retention(store, AudioStore(data_dir / AUDIO_DIR),
                              InputFiles(data_dir / INPUTS_DIR, settings.audio_input.max_download_bytes), outbox,
                              settings.storage.retention_days)
        return retention.prune(days)
    finally:
        store.close()
        outbox.close()
