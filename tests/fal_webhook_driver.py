"""Submits requests with ``webhook_url`` through the unmodified ``fal_client`` and prints what came back.

Run in a subprocess with FAL_QUEUE_RUN_HOST, FAL_KEY and SSL_CERT_FILE set (fal_client reads them at
import). Arguments: the webhook URL, then one ``prompt`` per request. Prints ``REPORT <json>``: each
request's id and its result as ``fal_client.result`` returns it.
"""

from __future__ import annotations

import json
import sys

import fal_client

ENDPOINT = "fal-ai/ace-step/prompt-to-audio"


def main(webhook_url: str, prompts: list[str]) -> list[dict]:
    handles = [fal_client.submit(ENDPOINT, {"prompt": prompt, "duration": 5, "number_of_steps": 3, "seed": 5},
                                 webhook_url=webhook_url) for prompt in prompts]
    return [{"request_id": handle.request_id, "result": handle.get()} for handle in handles]


if __name__ == "__main__":
    print("REPORT " + json.dumps(main(sys.argv[1], sys.argv[2:])))
