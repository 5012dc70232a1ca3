"""A dedicated ``/health`` client for the soak (tests/test_soak.py), in a process of its own.

Its latencies are then the server's, not those of a test process whose threads fight over one GIL.
``python tests/health_probe.py BASE_URL SECONDS OUT.json``: one GET every 0.1 s over one kept-alive
connection for SECONDS, then ``{"latencies_ms": [...], "statuses": {...}, "errors": [...]}`` to OUT.json.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

import httpx

INTERVAL_S = 0.1


def probe(base_url: str, seconds: float) -> dict:
    latencies, statuses, errors = [], Counter(), []
    end = time.monotonic() + seconds
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                status = client.get("/health").status_code
            except httpx.HTTPError as error:
                errors.append(f"{type(error).__name__}: {error}")
            else:
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[status] += 1
            time.sleep(max(0.0, INTERVAL_S - (time.perf_counter() - started)))
    return {"latencies_ms": latencies, "statuses": dict(statuses), "errors": errors}


if __name__ == "__main__":
    result = probe(sys.argv[1], float(sys.argv[2]))
    with open(sys.argv[3], "w", encoding="utf-8") as out:
        json.dump(result, out)
