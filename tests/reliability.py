"""Counters for the reliability tests (issue 9) and the summary line the test session prints.

Test modules import ``reliability_tally`` (an autouse fixture when imported as such) and add to
``TALLY``; the first use registers a plugin whose ``pytest_terminal_summary`` prints one line, with
or without ``-s``:

    reliability: requests fuzzed 1234, 5xx seen 0; jobs submitted 260 / completed 250 / failed 6 /
    cancelled 4 / lost 0; faults injected 9 / survived 9
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

PLUGIN_NAME = "acestep-reliability-summary"


@dataclass
class Tally:
    requests_fuzzed: int = 0
    server_errors: int = 0  # 5xx answers to fuzzed requests (injected faults are counted apart)
    jobs_submitted: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0  # FAILED with a reason
    jobs_cancelled: int = 0
    jobs_lost: int = 0  # accepted but never terminal, duplicated, or without exactly one usage row
    faults_injected: int = 0
    faults_survived: int = 0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None

    def count_jobs(self, statuses: list[str], lost: int = 0) -> None:
        """Add the final statuses of a batch of accepted jobs (``lost``: those that never ended)."""
        self.jobs_submitted += len(statuses) + lost
        self.jobs_completed += statuses.count("COMPLETED")
        self.jobs_failed += statuses.count("FAILED")
        self.jobs_cancelled += statuses.count("CANCELLED")
        self.jobs_lost += lost + sum(s not in ("COMPLETED", "FAILED", "CANCELLED") for s in statuses)

    def fault(self, survived: bool = True) -> None:
        self.faults_injected += 1
        self.faults_survived += bool(survived)

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) in (0, None) for f in fields(self))

    def line(self) -> str:
        text = (f"reliability: requests fuzzed {self.requests_fuzzed}, 5xx seen {self.server_errors}; "
                f"jobs submitted {self.jobs_submitted} / completed {self.jobs_completed} / "
                f"failed {self.jobs_failed} / cancelled {self.jobs_cancelled} / lost {self.jobs_lost}; "
                f"faults injected {self.faults_injected} / survived {self.faults_survived}")
        if self.latency_p50_ms is not None:
            text += f"; load latency p50 {self.latency_p50_ms:.0f} ms, p99 {self.latency_p99_ms:.0f} ms"
        return text


TALLY = Tally()
LINES: list[str] = []  # further one-line summaries (the soak's), printed after the tally




class SummaryReporter:
    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not TALLY.is_empty() or LINES:
            terminalreporter.write_sep("-", "reliability summary")
            terminalreporter.write_line(TALLY.line())
            for line in LINES:
                terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def reliability_tally(request) -> Tally:
    """The session's counters; registers the summary reporter on first use."""
    manager = request.config.pluginmanager
    if not manager.has_plugin(PLUGIN_NAME):
        manager.register(SummaryReporter(), PLUGIN_NAME)
    return TALLY
