"""CPU thread choice: cgroup quota parsing (v1 and v2, own cgroup and mount root), idle-CPU sampling,
the choice rule, and precedence of OMP_NUM_THREADS and [engine].threads."""

from __future__ import annotations

import pytest
import torch

from acestep_app.engine import cpu_threads
from acestep_app.engine.cpu_threads import (
    cgroup_cpu_limit,
    choose_threads,
    configure_cpu_threads,
    idle_cpus,
    parse_cfs_quota,
    parse_cpu_max,
    read_cpu_times,
    thread_choice,
)


@pytest.mark.parametrize(
    ("text", "cpus"), [("max 100000\n", None), ("200000 100000\n", 2.0), ("150000 100000", 1.5), ("50000", 0.5)]
)
def test_parse_cpu_max(text, cpus):
    assert parse_cpu_max(text) == cpus


def test_parse_cfs_quota():
    assert parse_cfs_quota("-1\n", "100000\n") is None
    assert parse_cfs_quota("300000\n", "100000\n") == 3.0


def test_cgroup_v2_own_cgroup_quota(tmp_path):
    (tmp_path / "sys" / "app.slice").mkdir(parents=True)
    (tmp_path / "sys" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "sys" / "app.slice" / "cpu.max").write_text("250000 100000\n")
    (tmp_path / "cgroup").write_text("0::/app.slice\n")
    assert cgroup_cpu_limit(tmp_path / "sys", tmp_path / "cgroup") == 2.5


def test_cgroup_v2_namespaced_root_quota(tmp_path):
    (tmp_path / "sys").mkdir()
    (tmp_path / "sys" / "cpu.max").write_text("100000 100000\n")
    (tmp_path / "cgroup").write_text("0::/\n")
    assert cgroup_cpu_limit(tmp_path / "sys", tmp_path / "cgroup") == 1.0


def test_cgroup_v1_quota(tmp_path):
    cpu = tmp_path / "sys" / "cpu,cpuacct" / "docker" / "abc"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("200000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cgroup").write_text("4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n")
    assert cgroup_cpu_limit(tmp_path / "sys", tmp_path / "cgroup") == 2.0


def test_no_cgroup_means_no_quota(tmp_path):
    assert cgroup_cpu_limit(tmp_path / "missing", tmp_path / "missing-cgroup") is None


def test_idle_cpus_counts_only_allowed_cpus(tmp_path):
    def stat(idle0, idle1):
        return (
            "cpu  1 2 3 4 5 6 7 8 0 0\n"
            f"cpu0 100 0 0 {idle0} 0 0 0 0 0 0\n"
            f"cpu1 100 0 0 {idle1} 0 0 0 0 0 0\n"
            "intr 1 2 3\n"
        )

    path = tmp_path / "stat"
    path.write_text(stat(0, 0))
    before = read_cpu_times(path)
    path.write_text(stat(100, 25))  # both CPUs spent every jiffy since the first sample idle
    after = read_cpu_times(path)
    assert set(before) == {0, 1}
    # ratios of jiffy counts in float64: exact up to rounding, approx's relative 1e-6
    assert idle_cpus(before, after, {0, 1}) == pytest.approx(2.0)
    assert idle_cpus(before, after, {1}) == pytest.approx(1.0)
    path.write_text(stat(0, 0).replace("cpu0 100", "cpu0 200"))  # cpu0 fully busy
    assert idle_cpus(before, read_cpu_times(path), {0}) == 0.0


@pytest.mark.parametrize(
    ("cpus", "quota", "idle", "small", "expected"),
    [
        (16, None, None, False, 16),  # nothing known: every allowed CPU
        (64, 2.0, None, False, 2),  # a 2-CPU container on a big host
        (64, 2.5, None, False, 2),  # fractional quota rounds down
        (64, 0.5, None, False, 1),  # never 0
        (8, None, 1.6, False, 2),  # busy host: only the idle cores
        (2, None, 0.1, False, 1),
        (16, None, None, True, 1),  # small model: one thread
    ],
)
def test_choose_threads(cpus, quota, idle, small, expected):
    assert choose_threads(cpus, quota, idle, small) == expected


def test_omp_num_threads_in_the_environment_wins():
    choice = thread_choice(4, small_model=True, environ={"OMP_NUM_THREADS": "3"})
    assert choice.threads is None and "OMP_NUM_THREADS=3" in choice.reason


def test_engine_setting_beats_the_automatic_choice():
    assert thread_choice(3, small_model=True, environ={}).threads == 3


def test_automatic_choice_uses_quota_and_idle(monkeypatch):
    monkeypatch.setattr(cpu_threads, "allowed_cpus", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(cpu_threads, "cgroup_cpu_limit", lambda: 3.0)
    monkeypatch.setattr(cpu_threads, "measure_idle_cpus", lambda cpus: 1.2)
    choice = thread_choice(0, small_model=False, environ={})
    assert choice.threads == 1
    assert "quota 3" in choice.reason and "idle 1.2" in choice.reason
    assert thread_choice(0, small_model=True, environ={}).threads == 1


def test_configure_sets_torch_threads_and_leaves_omp_alone():
    before = torch.get_num_threads()
    try:
        assert configure_cpu_threads(2, small_model=False, environ={}).threads == 2
        assert torch.get_num_threads() == 2
        torch.set_num_threads(before)
        configure_cpu_threads(2, small_model=False, environ={"OMP_NUM_THREADS": "1"})
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
