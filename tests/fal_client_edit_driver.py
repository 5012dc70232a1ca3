"""Drives the three editing endpoints of a local server with the unmodified ``fal_client``; prints JSON.

Run in a subprocess with FAL_RUN_HOST / FAL_QUEUE_RUN_HOST / FAL_KEY / SSL_CERT_FILE set (see
tests/test_fal_client.py). The source clip travels as a ``data:`` URI made by ``fal_client.encode``.
argv: the path of a WAV clip, then the path of a 6-channel WAV (a file the endpoints must refuse).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fal_client

APP = "fal-ai/ace-step"
FAST = {"number_of_steps": 3}


def refused(call) -> dict:
    """The status, fal error type and detail type of a call that must fail."""
    try:
        call()
    except fal_client.client.FalClientHTTPError as error:
        detail = error.message[0] if isinstance(error.message, list) else {}
        return {"status": error.status_code, "loc": detail.get("loc"), "type": detail.get("type")}
    return {"status": "accepted"}


def main(clip: Path, six_channels: Path) -> dict:
    source = fal_client.encode(clip.read_bytes(), "audio/wav")
    report: dict = {}
    updates: list[str] = []
    report["audio-to-audio"] = fal_client.subscribe(
        f"{APP}/audio-to-audio",
        {"audio_url": source, "edit_mode": "remix", "original_tags": "sine", "tags": "jazz", "seed": 5, **FAST},
        with_logs=True, on_queue_update=lambda status: updates.append(type(status).__name__),
    )
    report["audio-to-audio-updates"] = updates
    report["audio-inpaint"] = fal_client.run(
        f"{APP}/audio-inpaint",
        {"audio_url": source, "start_time": 0.5, "end_time": 1.5, "tags": "lofi", "seed": 6, **FAST},
    )
    handle = fal_client.submit(
        f"{APP}/audio-outpaint",
        {"audio_url": source, "extend_before_duration": 0, "extend_after_duration": 1.0, "tags": "lofi", "seed": 7,
         **FAST},
    )
    report["audio-outpaint"] = handle.get()

    bad = fal_client.encode(six_channels.read_bytes(), "audio/wav")
    report["six_channels_sync"] = refused(lambda: fal_client.run(
        f"{APP}/audio-inpaint", {"audio_url": bad, "tags": "x"}))
    report["six_channels_queue"] = refused(lambda: fal_client.submit(
        f"{APP}/audio-outpaint", {"audio_url": bad, "tags": "x"}).get())
    report["invalid_base64"] = refused(lambda: fal_client.run(
        f"{APP}/audio-to-audio", {"audio_url": "data:audio/wav;base64,%%%", "original_tags": "x", "tags": "y"}))
    return report


if __name__ == "__main__":
    print("REPORT " + json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
