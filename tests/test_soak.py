"""The bounded soak (issue 20): ``acestep-app serve`` on the tiny checkpoint, 32 hostile and careless clients
for 3 minutes, a dedicated ``/health`` probe in a process of its own.

The clients mix synchronous calls, queue submits (a third with webhooks), cancels, junk (bad JSON,
wrong content types, a foreign ``Host``, unknown paths, invalid fields), oversized bodies without a
key, and audio URLs that cannot be fetched. Then the server drains, stops, and ``acestep-app prune
--days 0`` runs. Asserted (the issue's acceptance criteria):

* ``/health`` p99 under 250 ms, from the probe (one GET every 0.1 s over the whole load);
* no 5xx answer, anywhere, and no request a client could not complete (but the oversized uploads the
  server refuses mid-body);
* no job lost: every accepted request ends, with exactly one usage row, and no job nobody submitted;
* no cancelled job billed, and every acknowledged cancel ends CANCELLED;
* every webhook delivered once, signed;
* server RSS growth under 300 MB: the peak of samples every 2 s over the RSS after a warm-up of one
  request of each kind (the first generation's allocations are not growth; the line shows the growth
  from ready too);
* the data dir after pruning under 64 KiB plus 512 bytes per accepted job (its usage row is the
  billing ledger, kept for ever; everything else goes).

The soak runs in a process of its own (``python tests/test_soak.py WORKDIR WEIGHTS``), started by
conftest's ``background_soak`` when the session begins, so its 3 minutes overlap the rest of the suite
instead of adding to CI's time; the test collects its results. The server is therefore soaked while
the suite loads the same two cores, which is harder on the latency bound, not easier.

``ACESTEP_SOAK_SECONDS`` shortens the load for a local run (CI runs the full 180 s). The summary
is one line in the test session's output (tests/reliability.py), like the reliability line.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from acestep_app.serving.retention import folder_size
from acestep_app.serving.webhooks.verify import verify
from conftest import wait_until, write_infra
from local_http import LocalServer, send
from reliability import LINES, TALLY, reliability_tally  # noqa: F401  (autouse: prints the summary)
from server_process import PROJECT_ROOT, free_port, running, serve_command
from webhook_receiver import Receiver

SECONDS = float(os.environ.get("ACESTEP_SOAK_SECONDS", "180"))
CLIENTS = 32
APP = "fal-ai/ace-step"
KEYS = ("soak-key-a", "soak-key-b")
HEALTH_P99_MS = 250.0
RSS_GROWTH_MB = 300.0
DATA_DIR_BASE, DATA_DIR_PER_JOB = 64 * 1024, 512  # bytes: the bound after pruning
OVERSIZED = 19 * 1024 * 1024
ROLES = ["sync"] * 6 + ["queue"] * 9 + ["cancel"] * 5 + ["junk"] * 5 + ["oversized"] * 4 + ["bad_url"] * 3
PROBE = Path(__file__).resolve().parent / "health_probe.py"


class Soak:
    """What the clients saw, under one lock."""

    def __init__(self, base_url: str, receiver_url: str, audio_urls: list[str]):
        self.base_url = base_url
        self.receiver_url = receiver_url
        self.audio_urls = audio_urls
        self.lock = threading.Lock()
        self.requests: Counter = Counter()  # per kind
        self.statuses: Counter = Counter()  # (kind, status)
        self.accepted: dict[str, dict] = {}  # request id -> {"kind", "webhook", "cancel_acked"}
        self.problems: list[str] = []  # anything that must not happen

    def record(self, kind: str, status: int, allowed: set[int]) -> None:
        with self.lock:
            self.requests[kind] += 1
            self.statuses[(kind, status)] += 1
            if status >= 500 or status not in allowed:
                self.problems.append(f"{kind}: HTTP {status}")

    def accept(self, request_id: str, kind: str, webhook: bool = False) -> None:
        with self.lock:
            self.accepted[request_id] = {"kind": kind, "webhook": webhook, "cancel_acked": False}

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


def song(rng: random.Random) -> dict:
    return {"prompt": f"soak {rng.random():.6f}", "duration": rng.choice([5, 8]), "number_of_steps": 3,
            "seed": rng.randrange(1000)}


def auth(rng: random.Random) -> dict[str, str]:
    return {"Authorization": f"Key {rng.choice(KEYS)}"}


def backoff(answer: httpx.Response) -> None:
    if answer.status_code == 429:
        time.sleep(min(1.0, float(answer.headers.get("retry-after", "1"))))


# -- the roles ------------------------------------------------------------------------------------------


def sync_call(soak: Soak, client: httpx.Client, rng: random.Random) -> None:
    answer = client.post("/prompt-to-audio", json=song(rng), headers=auth(rng), timeout=300)
    soak.record("sync", answer.status_code, {200, 429})
    if answer.status_code == 200:
        soak.accept(answer.headers["x-fal-request-id"], "sync")
    backoff(answer)


def submit(soak: Soak, client: httpx.Client, rng: random.Random, kind: str, body: dict, path: str = "/prompt-to-audio",
           webhook: bool = False) -> tuple[dict | None, dict]:
    headers = auth(rng)
    params = {"fal_webhook": soak.receiver_url} if webhook else None
    answer = client.post(f"/{APP}{path}", json=body, headers=headers, params=params)
    soak.record(kind, answer.status_code, {200, 429})
    backoff(answer)
    if answer.status_code != 200:
        return None, headers
    handle = answer.json()
    soak.accept(handle["request_id"], kind, webhook)
    return handle, headers


def follow(soak: Soak, client: httpx.Client, handle: dict, headers: dict, kind: str) -> dict:
    """The request's final status (polled); a problem if it has not ended in 10 minutes."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = client.get(handle["status_url"], headers=headers)
        soak.record(kind, status.status_code, {200, 202})
        if status.status_code == 200:
            return status.json()
        time.sleep(0.3)
    soak.problem(f"{kind}: {handle['request_id']} never ended")
    return {}


def queue_client(soak: Soak, client: httpx.Client, rng: random.Random) -> None:
    handle, headers = submit(soak, client, rng, "queue", song(rng), webhook=rng.random() < 1 / 3)
    if handle is None:
        return
    final = follow(soak, client, handle, headers, "queue")
    result = client.get(handle["response_url"], headers=headers)
    soak.record("queue", result.status_code, {200})
    if "error" in final or result.json().get("tags") is None:
        soak.problem(f"queue: a plain request failed: {final}")


def cancel_client(soak: Soak, client: httpx.Client, rng: random.Random) -> None:
    handle, headers = submit(soak, client, rng, "cancel", song(rng))
    if handle is None:
        return
    time.sleep(rng.choice([0.0, 0.1, 0.5, 1.0, 2.0]))  # queued, running, or already done
    answer = client.put(handle["cancel_url"], headers=headers)
    soak.record("cancel", answer.status_code, {202, 400})
    if answer.status_code == 202:
        with soak.lock:
            soak.accepted[handle["request_id"]]["cancel_acked"] = True
    follow(soak, client, handle, headers, "cancel")
    time.sleep(0.5)


JUNK = {  # case -> (what is sent, the answers it may get)
    "bad-json": (lambda rng: ("POST", {"content": b'{"prompt": ', "headers": {"content-type": "application/json"}}), {422}),
    "text-plain": (lambda rng: ("POST", {"content": json.dumps(song(rng)), "headers": {"content-type": "text/plain"}}),
                   {415}),
    "form": (lambda rng: ("POST", {"data": {"prompt": "form"}}), {415}),
    "foreign-host": (lambda rng: ("POST", {"json": song(rng), "headers": {"host": "attacker.example"}}), {400}),
    "invalid-fields": (lambda rng: ("POST", {"json": {"prompt": "x", "duration": -3, "scheduler": "nope"}}), {422}),
    "unknown-request": (lambda rng: ("GET", {"url": f"/{APP}/requests/00000000-0000-4000-8000-000000000000/status"}),
                        {404}),
    "path-escape": (lambda rng: ("GET", {"url": "/files/..%2Fjobs.sqlite3"}), {404, 405}),  # 405: a decoded %2F
}


def junk_client(soak: Soak, client: httpx.Client, rng: random.Random) -> None:
    case = rng.choice(sorted(JUNK))
    make, expected = JUNK[case]
    method, request = make(rng)
    request.setdefault("url", f"/{APP}/prompt-to-audio")
    request["headers"] = {**auth(rng), **request.get("headers", {})}
    answer = client.request(method, **request)
    soak.record(f"junk {case}", answer.status_code, expected)
    time.sleep(0.1)


def oversized_client(soak: Soak, client: httpx.Client, rng: random.Random) -> None:
    host, port = soak.base_url.removeprefix("http://").split(":")
    if rng.random() < 0.1:  # the whole body, as a careless client would send it
        try:
            answer = client.post("/audio-to-audio", content=b"{" + b" " * OVERSIZED + b"}",
                                 headers={"content-type": "application/json"})
            soak.record("oversized", answer.status_code, {401})
        except httpx.TransportError:  # refused mid-upload: the server answered and closed without reading
            soak.record("oversized", 401, {401})
        return
    with socket.create_connection((host, int(port)), timeout=30) as sock:  # headers and a sliver of the body
        sock.sendall(f"POST /{APP}/audio-to-audio HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json"
                     f"\r\nContent-Length: {OVERSIZED}\r\n\r\n".encode() + b"{" + b" " * 4096)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(256)
            if not chunk:
                break
            head += chunk
    soak.record("oversized", int(head.split(b" ")[1]), {401})
    time.sleep(0.1)


def bad_url_client(soak: Soak, client: httpx.Client, rng: random.Random) -> None:
    body = {"audio_url": rng.choice(soak.audio_urls), "tags": "x", "original_tags": "y", "number_of_steps": 3}
    handle, headers = submit(soak, client, rng, "bad_url", body, path="/audio-to-audio")
    if handle is None:
        return
    final = follow(soak, client, handle, headers, "bad_url")
    if final.get("error_type") not in ("file_download_error", "unsupported_audio_format"):
        soak.problem(f"bad_url: {final}")


ROLE_CALLS = {"sync": sync_call, "queue": queue_client, "cancel": cancel_client, "junk": junk_client,
              "oversized": oversized_client, "bad_url": bad_url_client}
KINDS = ("sync", "queue", "cancel", "junk", "oversized", "bad_url")


def warm_up(soak: Soak) -> None:
    """One request of every kind before the clock starts: code paths run (and import) once, as after any start."""
    rng = random.Random(-1)
    with httpx.Client(base_url=soak.base_url, timeout=60) as client:
        for role in ROLE_CALLS.values():
            role(soak, client, rng)


def run_client(soak: Soak, index: int, end: float) -> None:
    rng = random.Random(index)  # each client's mix is the same on every run
    role = ROLE_CALLS[ROLES[index]]
    time.sleep(0.05 * index)  # clients arrive over 1.6 s, not in one instant
    with httpx.Client(base_url=soak.base_url, timeout=60) as client:
        while time.monotonic() < end:
            try:
                role(soak, client, rng)
            except Exception as error:  # a client that could not finish a request is a finding
                soak.problem(f"{ROLES[index]}: {type(error).__name__}: {error}")
                time.sleep(0.5)


# -- measuring -------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def sample_rss(pid: int, stop: threading.Event, samples: list[float]) -> None:
    while not stop.wait(2.0):
        try:
            samples.append(rss_mb(pid))
        except (OSError, AssertionError):
            return


def table(data_dir: Path, sql: str) -> list[sqlite3.Row]:
    db = sqlite3.connect(f"file:{data_dir / 'jobs.sqlite3'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def soak(workdir: Path, weights: Path) -> dict:
    """Runs the soak against ``acestep-app serve`` on ``weights``; returns what was measured (JSON-ready)."""
    infra = write_infra(workdir / "infra.toml",
                        engine={"weights_dir": str(weights), "device": "cpu", "prompt_backend": "fallback"},
                        queue={"max_pending": 16, "max_pending_per_key": 8},  # low enough to be hit
                        webhooks={"max_attempts": 3, "retry_window_seconds": 2.0, "timeout_seconds": 5.0})
    os.environ["ACESTEP_INFRA"] = str(infra)  # this process is the soak's own (see ``main``)
    data_dir, port = workdir / "data", free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = serve_command(data_dir, port, "--weights", str(weights), "--allow-private-urls",
                            *[arg for key in KEYS for arg in ("--api-key", key)])
    not_audio = {"/not-audio.wav": lambda handler: send(handler, 200, b"<html>not a song</html>"),
                 "/gone.wav": lambda handler: send(handler, 404, b"gone")}
    with Receiver() as receiver, LocalServer(not_audio) as files, \
            running(command, base_url, workdir / "server.log", timeout=120) as server:
        audio_urls = [files.url("/not-audio.wav"), files.url("/gone.wav"), "http://169.254.169.254/latest/song.wav",
                      f"http://127.0.0.1:{free_port()}/closed.wav", "ftp://example.com/song.wav"]
        soak = Soak(base_url, receiver.url, audio_urls)
        pid = server.process.pid
        at_ready = rss_mb(pid)
        warm_up(soak)  # the first generation's allocations are torch's, not growth
        baseline, samples, stop = rss_mb(pid), [], threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(pid, stop, samples), daemon=True)
        probe = subprocess.Popen([sys.executable, str(PROBE), base_url, str(SECONDS), str(workdir / "probe.json")],
                                 cwd=PROJECT_ROOT)
        sampler.start()
        end = time.monotonic() + SECONDS
        clients = [threading.Thread(target=run_client, args=(soak, index, end)) for index in range(CLIENTS)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        assert probe.wait(60) == 0
        wait_until(lambda: not table(data_dir, "SELECT 1 FROM jobs WHERE status IN ('IN_QUEUE', 'IN_PROGRESS')"),
                   timeout=300, interval=0.5)
        webhooks = [rid for rid, info in soak.accepted.items() if info["webhook"]]
        delivered = receiver.wait_for(len(webhooks), timeout=120)
        jwks = httpx.get(f"{base_url}/.well-known/jwks.json").json()
        stop.set()
        sampler.join()
        samples.append(rss_mb(pid))
    jobs = {row["request_id"]: row for row in table(data_dir, "SELECT * FROM jobs")}
    usage = table(data_dir, "SELECT * FROM usage")
    before_prune = folder_size(data_dir)
    pruned = subprocess.run([sys.executable, "-m", "acestep_app.cli", "prune", "--data-dir", str(data_dir), "--days", "0"],
                            capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    after_prune = folder_size(data_dir)

    probed = json.loads((workdir / "probe.json").read_text())
    latencies = probed["latencies_ms"]
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    statuses = Counter(row["status"] for row in jobs.values())
    lost = sorted(set(soak.accepted) - {rid for rid, row in jobs.items() if row["status"] in
                                        ("COMPLETED", "FAILED", "CANCELLED")})
    usage_count = Counter(row["request_id"] for row in usage)
    growth = max(samples) - baseline
    bound = DATA_DIR_BASE + DATA_DIR_PER_JOB * len(soak.accepted)
    server_errors = sum(count for (_, status), count in soak.statuses.items() if status >= 500)
    server_errors += sum(count for status, count in probed["statuses"].items() if int(status) >= 500)
    too_many = sum(count for (_, status), count in soak.statuses.items() if status == 429)
    billed_cancels = [row["request_id"] for row in usage if row["status"] == "CANCELLED" and
                      (row["seconds"] or row["price_usd"])]
    kinds = ", ".join(f"{kind} {sum(n for name, n in soak.requests.items() if name.split()[0] == kind)}"
                      for kind in KINDS)
    line = (f"soak: {SECONDS:.0f} s, {CLIENTS} clients vs acestep-app serve (tiny): requests {sum(soak.requests.values())} "
            f"({kinds}), 429 {too_many}, 5xx {server_errors}; jobs accepted {len(soak.accepted)}: completed "
            f"{statuses['COMPLETED']} / failed {statuses['FAILED']} / cancelled {statuses['CANCELLED']} (billed "
            f"{len(billed_cancels)}) / lost {len(lost)}; webhooks {len(delivered)}/{len(webhooks)}; /health p50 "
            f"{p50:.0f} ms, p99 {p99:.0f} ms ({len(latencies)} probes); RSS +{growth:.0f} MB after warm-up (+"
            f"{max(samples) - at_ready:.0f} MB from ready); data dir "
            f"{before_prune / 2**20:.1f} MiB -> {after_prune / 2**10:.0f} KiB after prune (bound {bound / 2**10:.0f} KiB)")
    return {
        "line": line, "problems": soak.problems, "probe_errors": probed["errors"], "server_errors": server_errors,
        "health_p99_ms": p99, "job_statuses": [row["status"] for row in jobs.values()], "lost": lost,
        "unrequested": sorted(set(jobs) - set(soak.accepted)),
        "one_usage_row_per_job": set(usage_count) == set(jobs) and set(usage_count.values()) == {1},
        "billed_cancels": billed_cancels,
        "lost_cancels": [rid for rid, info in soak.accepted.items() if info["cancel_acked"] and
                         jobs[rid]["status"] != "CANCELLED"],
        "junk_cases_sent": all(soak.requests[f"junk {case}"] for case in JUNK),
        "oversized_sent": soak.requests["oversized"],
        "webhooks_expected": sorted(webhooks),
        "webhooks_delivered": sorted(json.loads(item.body)["request_id"] for item in delivered),
        "webhooks_verified": all(verify(item.headers, item.body, jwks, max_age_s=600) for item in delivered),
        "rss_growth_mb": growth, "data_dir_after_prune": after_prune, "data_dir_bound": bound,
        "ledger_rows_after_prune": table(data_dir, "SELECT COUNT(*) FROM usage")[0][0],
    }


def start_in_background(workdir: Path, weights: Path) -> subprocess.Popen:
    """The soak in a process of its own, its results to ``workdir/soak.json`` (conftest starts it first)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "soak.log", "wb") as log:
        return subprocess.Popen([sys.executable, __file__, str(workdir), str(weights)], cwd=PROJECT_ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # see stop_soak


def stop_soak(process: subprocess.Popen) -> None:
    """Ends a soak still running, with the server and probe it started (its whole process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_soak_32_clients_for_3_minutes(background_soak):
    process, workdir = background_soak
    code = process.wait(timeout=SECONDS + 900)  # the load, then draining, webhooks and the prune
    assert code == 0, (workdir / "soak.log").read_text()[-4000:]
    result = json.loads((workdir / "soak.json").read_text())
    line = result["line"]
    LINES.append(line)
    print("\n" + line)
    TALLY.count_jobs(result["job_statuses"], lost=len(result["lost"]))

    assert result["problems"] == [], result["problems"][:20]
    assert result["probe_errors"] == [] and result["server_errors"] == 0
    assert result["health_p99_ms"] < HEALTH_P99_MS, line
    assert result["lost"] == [] and result["unrequested"] == [], (result["lost"][:5], result["unrequested"][:5])
    assert result["one_usage_row_per_job"]
    assert result["billed_cancels"] == [] and result["lost_cancels"] == [], line
    statuses = Counter(result["job_statuses"])
    assert statuses["COMPLETED"] and statuses["FAILED"] and statuses["CANCELLED"]  # the mix really ran
    assert result["junk_cases_sent"] and result["oversized_sent"]
    assert result["webhooks_delivered"] == result["webhooks_expected"] and result["webhooks_verified"]
    assert result["rss_growth_mb"] < RSS_GROWTH_MB, line
    assert result["data_dir_after_prune"] < result["data_dir_bound"], line
    assert result["ledger_rows_after_prune"] == len(result["job_statuses"])  # the ledger survived the pruning


if __name__ == "__main__":  # the soak's own process: python tests/test_soak.py WORKDIR WEIGHTS
    folder = Path(sys.argv[1])
    (folder / "soak.json").write_text(json.dumps(soak(folder, Path(sys.argv[2]))))
