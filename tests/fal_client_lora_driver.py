"""Sends per-request ``loras`` with the unmodified ``fal_client`` to a local server; prints what came back as JSON.

Run in a subprocess with FAL_RUN_HOST / FAL_QUEUE_RUN_HOST / FAL_KEY / SSL_CERT_FILE set (see
tests/test_fal_client.py). argv: the URL of an adapter that fits the served model, then one of a bad file.
"""

from __future__ import annotations

import json
import sys

import fal_client

from fal_client_edit_driver import refused  # this script runs from tests/, beside it

APP = "fal-ai/ace-step"
BODY = {"tags": "funk", "lyrics": "[verse]\nla la", "duration": 5, "number_of_steps": 3, "seed": 4}


def main(good: str, bad: str) -> dict:
    loras = [{"path": good, "scale": 0.5}]
    report = {
        "with_lora": fal_client.run(APP, {**BODY, "loras": loras}),
        "queued": fal_client.submit(APP, {**BODY, "loras": loras}).get(),
        "plain": fal_client.run(APP, BODY),
        "bad_sync": refused(lambda: fal_client.run(APP, {**BODY, "loras": [{"path": bad}]})),
        "bad_queue": refused(lambda: fal_client.submit(APP, {**BODY, "loras": [{"path": bad}]}).get()),
    }
    return report


if __name__ == "__main__":
    print("REPORT " + json.dumps(main(sys.argv[1], sys.argv[2])), flush=True)
