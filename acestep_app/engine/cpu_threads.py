"""How many CPU threads torch uses when the engine runs on a CPU.

torch's default is one intra-op thread per core it can see. It ignores a container's CPU quota
(a 2-CPU quota on a 64-core host still gets 64 threads) and other processes on the same cores.
OpenMP threads that share busy cores wait for each other at every op's barrier. For example, the
tiny demo took 42 s with 2 threads on 2 busy cores and 2 s with 1 thread. ``choose_threads``
picks the count instead, from:

* the CPUs this process may run on (``os.sched_getaffinity``),
* the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded down,
* how many of those CPUs are idle right now (``/proc/stat`` sampled over 0.2 s), so a busy host
  gets fewer threads,
* the model size: a small model (the tiny demo checkpoint) gets 1 thread, because its ops are
  too small to split.

Overrides, in order: ``OMP_NUM_THREADS`` in the environment (torch already honours it, and it is
left alone), then ``[engine].threads`` (or ``--threads``) when it is above 0. 0 means automatic.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
PROC_STAT = Path("/proc/stat")
SMALL_MODEL_PARAMETERS = 20_000_000  # below this a transformer forward is too small to split across threads
IDLE_SAMPLE_SECONDS = 0.2
MAX_INTEROP_THREADS = 4


@dataclass(frozen=True)
class ThreadChoice:
    threads: int | None  # None: left to torch (OMP_NUM_THREADS is set)
    reason: str


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``) -> CPUs, None if unlimited."""
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    period = int(fields[1]) if len(fields) > 1 else 100_000
    return _quota_cpus(int(fields[0]), period)


def parse_cfs_quota(quota_text: str, period_text: str) -> float | None:
    """cgroup v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` -> CPUs, None if unlimited (quota -1)."""
    return _quota_cpus(int(quota_text.strip()), int(period_text.strip()))


def _quota_cpus(quota: int, period: int) -> float | None:
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 2.5), or None when there is none.

    Looks at the process's own cgroup (from ``/proc/self/cgroup``) and at the mount root (what a
    container with a cgroup namespace sees); the smallest quota found wins.
    """
    limits = [limit for limit in _v2_limits(root, proc_cgroup) + _v1_limits(root, proc_cgroup) if limit]
    return min(limits) if limits else None


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """controller -> path from ``/proc/self/cgroup`` (v2's unified entry under the key "")."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return {}
    paths = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _candidates(base: Path, relative: str | None) -> list[Path]:
    found = [base]
    if relative and relative != "/":
        found.insert(0, base / relative.lstrip("/"))
    return found


def _v2_limits(root: Path, proc_cgroup: Path) -> list[float | None]:
    relative = _cgroup_paths(proc_cgroup).get("")
    texts = [_read(directory / "cpu.max") for directory in _candidates(root, relative)]
    return [parse_cpu_max(text) for text in texts if text]


def _v1_limits(root: Path, proc_cgroup: Path) -> list[float | None]:
    relative = _cgroup_paths(proc_cgroup).get("cpu")
    limits = []
    for mount in (root / "cpu", root / "cpu,cpuacct"):
        for directory in _candidates(mount, relative):
            quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
            if quota and period:
                limits.append(parse_cfs_quota(quota, period))
    return limits


def allowed_cpus() -> set[int]:
    """CPUs this process may run on (its affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def read_cpu_times(stat_path: Path = PROC_STAT) -> dict[int, tuple[int, int]]:
    """Per CPU ``(idle + iowait, total)`` jiffies from ``/proc/stat``."""
    times = {}
    for line in (_read(stat_path) or "").splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            numbers = [int(value) for value in values[:8]]
            times[int(name[3:])] = (numbers[3] + numbers[4], sum(numbers))
    return times


def idle_cpus(before: Mapping[int, tuple[int, int]], after: Mapping[int, tuple[int, int]], cpus: set[int]) -> float:
    """How many of ``cpus`` were idle between two :func:`read_cpu_times` samples (0.0 .. len(cpus))."""
    idle = 0.0
    for cpu in cpus:
        if cpu in before and cpu in after:
            total = after[cpu][1] - before[cpu][1]
            idle += (after[cpu][0] - before[cpu][0]) / total if total > 0 else 1.0
    return idle


def measure_idle_cpus(cpus: set[int], seconds: float = IDLE_SAMPLE_SECONDS) -> float | None:
    before = read_cpu_times()
    if not before:
        return None
    time.sleep(seconds)
    return idle_cpus(before, read_cpu_times(), cpus)


def choose_threads(cpus: int, quota: float | None, idle: float | None, small_model: bool) -> int:
    """Intra-op threads for ``cpus`` allowed CPUs, a cgroup ``quota`` (CPUs) and ``idle`` CPUs right now."""
    if small_model:
        return 1
    threads = cpus
    if quota is not None:
        threads = min(threads, math.floor(quota))
    if idle is not None:
        threads = min(threads, round(idle))
    return max(1, threads)


def thread_choice(
    setting: int, *, small_model: bool, environ: Mapping[str, str] = os.environ, probe_idle: bool = True
) -> ThreadChoice:
    """What to run with: ``setting`` is ``[engine].threads`` (0 = automatic)."""
    if environ.get("OMP_NUM_THREADS", "").strip():
        return ThreadChoice(None, f"OMP_NUM_THREADS={environ['OMP_NUM_THREADS']} (left to torch)")
    if setting > 0:
        return ThreadChoice(setting, "[engine].threads")
    if small_model:
        return ThreadChoice(1, "small model")
    cpus = allowed_cpus()
    quota = cgroup_cpu_limit()
    idle = measure_idle_cpus(cpus) if probe_idle else None
    threads = choose_threads(len(cpus), quota, idle, small_model)
    quota_text = "none" if quota is None else f"{quota:g}"
    idle_text = "not measured" if idle is None else f"{idle:.1f}"
    return ThreadChoice(threads, f"{len(cpus)} CPUs allowed, cgroup quota {quota_text}, idle {idle_text}")


def configure_cpu_threads(setting: int, *, small_model: bool, environ: Mapping[str, str] = os.environ) -> ThreadChoice:
    """Apply :func:`thread_choice` to torch (intra-op and, if still possible, inter-op threads)."""
    import torch

    choice = thread_choice(setting, small_model=small_model, environ=environ)
    if choice.threads is not None:
        torch.set_num_threads(choice.threads)
        try:
            torch.set_num_interop_threads(min(choice.threads, MAX_INTEROP_THREADS))
        except RuntimeError:  # only settable before the first inter-op parallel work of the process
            pass
    logger.info("torch CPU threads: %d (%s)", torch.get_num_threads(), choice.reason)
    return choice
