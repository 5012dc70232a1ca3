"""Drives a local server with the unmodified ``fal_client`` and prints what it saw as JSON.

Run in a subprocess: fal_client reads FAL_RUN_HOST / FAL_QUEUE_RUN_HOST at import, so the test sets
them (plus FAL_KEY and SSL_CERT_FILE) in this process's environment before it starts.
"""

from __future__ import annotations

import json
import sys
import time

import fal_client

APP = "fal-ai/ace-step"
ENDPOINT = f"{APP}/prompt-to-audio"


def wait_in_progress(handle, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if isinstance(handle.status(), fal_client.InProgress):
            return
        time.sleep(0.02)
    raise AssertionError("never IN_PROGRESS")


def main(duration: float) -> dict:
    report: dict = {}
    updates, enqueued = [], []
    report["subscribe"] = fal_client.subscribe(
        ENDPOINT, {"prompt": "a lofi song", "duration": duration, "seed": 11}, with_logs=True,
        on_enqueue=enqueued.append, on_queue_update=lambda status: updates.append(type(status).__name__),
    )
    report["subscribe_enqueued"] = enqueued
    report["subscribe_updates"] = updates

    report["run"] = fal_client.run(ENDPOINT, {"prompt": "direct", "duration": duration, "seed": 12})
    report["run_text_to_audio"] = fal_client.run(APP, {"tags": "jazz", "lyrics": "[inst]", "duration": duration})

    first = fal_client.submit(ENDPOINT, {"prompt": "first", "duration": duration, "seed": 13})
    second = fal_client.submit(ENDPOINT, {"prompt": "second", "duration": duration})
    third = fal_client.submit(APP, {"tags": "rock", "duration": duration})
    wait_in_progress(first)
    queued = fal_client.status(ENDPOINT, second.request_id, with_logs=True)
    report["queued_status"] = {"type": type(queued).__name__, "position": getattr(queued, "position", None)}
    fal_client.cancel(ENDPOINT, second.request_id)  # while queued
    first.cancel()  # while running
    try:
        first.get()
        report["cancelled_result"] = "no error"
    except fal_client.client.FalClientHTTPError as error:
        report["cancelled_result"] = {"status": error.status_code, "error_type": error.error_type}
    completed = third.status(with_logs=True)
    while not isinstance(completed, fal_client.Completed):
        time.sleep(0.05)
        completed = third.status(with_logs=True)
    report["completed_logs"] = [entry["message"] for entry in completed.logs]
    report["third_result"] = fal_client.result(APP, third.request_id)
    report["second_status"] = type(fal_client.status(ENDPOINT, second.request_id)).__name__

    try:
        fal_client.submit(ENDPOINT, {"prompt": "x", "duration": 1000})
        report["invalid"] = "accepted"
    except fal_client.client.FalClientHTTPError as error:
        report["invalid"] = {"status": error.status_code, "loc": error.message[0]["loc"]}
    return report


if __name__ == "__main__":
    print("REPORT " + json.dumps(main(float(sys.argv[1]))))
