"""Server processes: kill -9 with jobs queued and running, restart, nothing lost; bounded load.

Every accepted job must end COMPLETED, or FAILED with a reason, with exactly one usage row.
The double (tests/engine_double.py) holds jobs in slow steps; ``test_real_serve_*`` runs
``acestep-app serve --weights <tiny checkpoint>``. Figures go into tests/reliability.py's summary.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import wait_until
from metrics_scrape import parse, value
from reliability import TALLY, reliability_tally  # noqa: F401  (autouse: prints the reliability summary)
from server_process import ServerProcess, double_command, free_port, running, serve_command

APP = "fal-ai/ace-step"


def submit(base_url: str, payload: dict, path: str = "/prompt-to-audio", client: httpx.Client | None = None) -> dict:
    response = (client or httpx).post(f"{base_url}/{APP}{path}", json=payload, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def status_of(handle: dict) -> dict:
    return httpx.get(handle["status_url"], timeout=30).json()


def read_table(data_dir: Path, sql: str) -> list[sqlite3.Row]:
    db = sqlite3.connect(data_dir / "jobs.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def jobs_table(data_dir: Path) -> list[sqlite3.Row]:
    return read_table(data_dir, "SELECT * FROM jobs ORDER BY seq")


def usage_table(data_dir: Path) -> list[sqlite3.Row]:
    return read_table(data_dir, "SELECT * FROM usage")


def server_in(tmp_path: Path, build_command, *args: str) -> tuple[ServerProcess, str, Path]:
    """A (not yet started) server process with its data dir under ``tmp_path``: (server, base URL, data dir)."""
    data_dir, port = tmp_path / "data", free_port()
    base_url = f"http://127.0.0.1:{port}"
    return ServerProcess(build_command(data_dir, port, *args), base_url, tmp_path / "server.log"), base_url, data_dir


def test_kill_9_with_jobs_running_and_queued_then_restart_completes_all(tmp_path):
    server, base_url, data_dir = server_in(tmp_path, double_command, "--steps", "10", "--step-delay", "0.1")
    server.start()
    try:
        handles = [submit(base_url, {"prompt": f"song {i}", "duration": 5}) for i in range(3)]
        handles.append(submit(base_url, {"tags": "jazz", "duration": 5}, path=""))
        wait_until(lambda: status_of(handles[0])["status"] == "IN_PROGRESS")
        server.kill()
        assert [row["status"] for row in jobs_table(data_dir)] == ["IN_PROGRESS"] + ["IN_QUEUE"] * 3

        server.start()
        for handle in handles:
            final = wait_until(lambda: (body := status_of(handle))["status"] == "COMPLETED" and body)
            assert "error" not in final, final
        logs = httpx.get(handles[0]["status_url"], params={"logs": "true"}).json()["logs"]
        assert any("re-queued" in entry["message"] for entry in logs)
        results = [httpx.get(handle["response_url"]) for handle in handles]
        assert all(result.status_code == 200 for result in results)
        assert all(result.headers["x-fal-billable-units"] == "5" for result in results)
    finally:
        server.stop()
    rows = jobs_table(data_dir)
    assert [row["status"] for row in rows] == ["COMPLETED"] * 4
    assert [row["attempts"] for row in rows] == [2, 1, 1, 1]
    assert sorted(row["request_id"] for row in usage_table(data_dir)) == sorted(h["request_id"] for h in handles)
    TALLY.count_jobs([row["status"] for row in rows])
    TALLY.fault()


def test_a_job_that_crashes_the_server_twice_fails_with_a_reason(tmp_path):
    server, base_url, data_dir = server_in(tmp_path, double_command, "--steps", "50", "--step-delay", "0.1")
    server.start()
    try:
        handle = submit(base_url, {"prompt": "poison", "duration": 5})
        for _ in range(2):
            wait_until(lambda: status_of(handle)["status"] == "IN_PROGRESS")
            server.kill()
            server.start()
        final = wait_until(lambda: (body := status_of(handle))["status"] == "COMPLETED" and body)
        assert final["error_type"] == "server_restarted"
        assert "stopped while this request was running" in final["error"]
        result = httpx.get(handle["response_url"])
        assert result.status_code == 500 and result.headers["x-fal-billable-units"] == "0"
    finally:
        server.stop()
    assert [(row["status"], row["seconds"]) for row in usage_table(data_dir)] == [("FAILED", 0)]
    TALLY.count_jobs(["FAILED"])
    TALLY.fault()
    TALLY.fault()


def test_graceful_stop_requeues_the_running_job(tmp_path):
    server, base_url, data_dir = server_in(tmp_path, double_command, "--steps", "50", "--step-delay", "0.1")
    server.start()
    try:
        handle = submit(base_url, {"prompt": "x", "duration": 5})
        wait_until(lambda: status_of(handle)["status"] == "IN_PROGRESS")
        server.stop()  # SIGTERM
        (row,) = jobs_table(data_dir)
        assert (row["status"], row["attempts"]) == ("IN_QUEUE", 0)
    finally:
        server.stop()


def test_load_200_submissions_from_20_clients(tmp_path):
    """20 clients each submit 10 jobs one after another; every status poll's queue position is checked."""
    data_dir, port = tmp_path / "data", free_port()
    base_url = f"http://127.0.0.1:{port}"
    total, clients = 200, 20

    def one_client(index: int) -> list[tuple[dict, float, list[int]]]:
        done = []
        with httpx.Client(timeout=60) as client:
            for n in range(total // clients):
                started = time.perf_counter()
                handle = submit(base_url, {"prompt": f"load {index}-{n}", "duration": 5}, client=client)
                positions = [handle["queue_position"]]
                while (body := client.get(handle["status_url"]).json())["status"] != "COMPLETED":
                    if body["status"] == "IN_QUEUE":
                        positions.append(body["queue_position"])
                    time.sleep(0.02)
                result = client.get(handle["response_url"])
                assert result.status_code == 200 and "error" not in body
                assert result.json()["tags"] == "double, silence" and result.headers["x-fal-billable-units"] == "5"
                done.append((handle, time.perf_counter() - started, positions))
        return done

    with running(double_command(data_dir, port, "--steps", "1"), base_url, tmp_path / "server.log"):
        with ThreadPoolExecutor(clients) as pool:
            outcomes = [item for batch in pool.map(one_client, range(clients)) for item in batch]
        metrics = parse(httpx.get(f"{base_url}/metrics").text)  # from 127.0.0.1: no metrics key needed

    # the load as /metrics saw it: every job counted once, billed, timed; nothing left in the queue
    assert value(metrics, "acestep_requests_submitted_total", endpoint="prompt-to-audio") == total
    assert value(metrics, "acestep_requests_total", endpoint="prompt-to-audio", status="COMPLETED") == total
    assert value(metrics, "acestep_billed_audio_seconds_total", endpoint="prompt-to-audio") == 5.0 * total
    assert value(metrics, "acestep_queue_wait_seconds_count", endpoint="prompt-to-audio") == total
    assert value(metrics, "acestep_run_seconds_count", endpoint="prompt-to-audio") == total
    assert value(metrics, "acestep_queue_depth", state="queued") == value(metrics, "acestep_queue_depth",
                                                                         state="running") == 0
    assert value(metrics, "acestep_http_responses_total", method="POST", code="200") == total

    handles = [handle for handle, _, _ in outcomes]
    latencies = sorted(latency for _, latency, _ in outcomes)
    rows = jobs_table(data_dir)
    assert len(handles) == total and len({h["request_id"] for h in handles}) == total
    assert {row["request_id"] for row in rows} == {h["request_id"] for h in handles}  # none lost, none extra
    assert all(row["status"] == "COMPLETED" for row in rows)
    for _, _, positions in outcomes:
        # each client has one job outstanding, so at most the other 19 clients' jobs are ahead; a job
        # only ever moves forward in the queue
        assert all(0 <= p < clients for p in positions) and positions == sorted(positions, reverse=True)
    started_order = sorted(rows, key=lambda row: row["started_at"])
    assert [row["seq"] for row in started_order] == [row["seq"] for row in rows]  # FIFO
    usage = usage_table(data_dir)
    assert len(usage) == total and {row["request_id"] for row in usage} == {h["request_id"] for h in handles}
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]
    TALLY.count_jobs([row["status"] for row in rows])
    TALLY.latency_p50_ms, TALLY.latency_p99_ms = p50 * 1000, p99 * 1000
    print(f"\nload: {total} jobs from {clients} clients: submitted {total}, completed {len(rows)}, "
          f"lost 0; latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")


def test_serve_refuses_an_unwritable_data_dir_before_loading_weights(tmp_path):
    """A data dir that cannot be created (under a file) stops ``acestep-app serve`` at once with the reason."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    command = serve_command(blocker / "data", free_port(), "--weights", str(tmp_path / "no-weights-needed"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=Path(__file__).parents[1])
    assert done.returncode == 1
    assert "cannot open the job database" in done.stderr + done.stdout
    assert time.monotonic() - started < 60
    TALLY.fault()


def test_real_serve_kill_9_with_jobs_running_and_queued_then_restart_completes_all(tmp_path, tiny_weights):
    """``acestep-app serve --weights <tiny>`` as a real process: kill -9 mid-job, restart, all complete."""
    server, base_url, data_dir = server_in(tmp_path, serve_command, "--weights", str(tiny_weights))
    server.start(timeout=120)
    try:
        handles = [submit(base_url, {"prompt": "long one", "duration": 5, "number_of_steps": 20, "seed": 1})]
        handles.append(submit(base_url, {"prompt": "queued", "duration": 5, "number_of_steps": 3, "seed": 2}))
        handles.append(submit(base_url, {"tags": "jazz", "lyrics": "[verse]\nla", "duration": 5,
                                         "number_of_steps": 3, "seed": 3}, path=""))
        wait_until(lambda: status_of(handles[0])["status"] == "IN_PROGRESS")
        server.kill()
        assert [row["status"] for row in jobs_table(data_dir)] == ["IN_PROGRESS", "IN_QUEUE", "IN_QUEUE"]

        server.start(timeout=120)
        for handle in handles:
            final = wait_until(lambda: (body := status_of(handle))["status"] == "COMPLETED" and body, timeout=120)
            assert "error" not in final, final
        results = [httpx.get(handle["response_url"], timeout=30) for handle in handles]
        for result in results:
            assert result.status_code == 200
            audio = httpx.get(result.json()["audio"]["url"], timeout=30)
            assert audio.status_code == 200 and len(audio.content) == result.json()["audio"]["file_size"]
            assert 4.9 < float(result.headers["x-fal-billable-units"]) <= 5
        assert [result.json()["seed"] for result in results] == [1, 2, 3]
    finally:
        server.stop()
    rows = jobs_table(data_dir)
    assert [(row["status"], row["attempts"]) for row in rows] == [("COMPLETED", 2), ("COMPLETED", 1), ("COMPLETED", 1)]
    assert sorted(row["request_id"] for row in usage_table(data_dir)) == sorted(h["request_id"] for h in handles)
    TALLY.count_jobs([row["status"] for row in rows])
    TALLY.fault()
