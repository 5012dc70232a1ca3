"""Drives a local server's ACE-Step 1.5 endpoints with the unmodified ``fal_client``; prints what it saw as JSON.

Run in a subprocess with FAL_RUN_HOST / FAL_QUEUE_RUN_HOST / FAL_KEY / SSL_CERT_FILE set (fal_client
reads them at import). Argument: a WAV file, sent as ``data:`` URIs for the source and reference audio.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import fal_client

APP = "fal-ai/ace-step-1.5"


def main(wav: Path) -> dict:
    audio = "data:audio/wav;base64," + base64.b64encode(wav.read_bytes()).decode()
    report: dict = {}
    updates: list[str] = []
    report["text_to_music"] = fal_client.subscribe(
        APP, {"prompt": "dreamy synth-pop", "lyrics": "[verse]\nneon nights", "duration": 1.0,
              "num_inference_steps": 2, "seed": 7},
        with_logs=True, on_queue_update=lambda status: updates.append(type(status).__name__),
    )
    report["text_to_music_updates"] = updates
    report["repaint"] = fal_client.subscribe(
        f"{APP}/repaint", {"source_audio_url": audio, "start_time": 0.2, "end_time": 0.6, "prompt": "brass section",
                           "lyrics": "[verse]\nla la", "repaint_strength": 0.8, "seed": 8, "vocal_language": "en",
                           "num_inference_steps": 2})
    report["cover"] = fal_client.subscribe(
        f"{APP}/cover", {"source_audio_url": audio, "reference_audio_url": audio, "prompt": "acoustic folk",
                         "cover_strength": 0.7, "seed": 9, "num_inference_steps": 2})
    try:
        fal_client.subscribe(f"{APP}/repaint", {"source_audio_url": audio, "start_time": 30, "prompt": "x"})
        report["invalid"] = "accepted"
    except fal_client.client.FalClientHTTPError as error:
        report["invalid"] = {"status": error.status_code, "loc": error.message[0]["loc"]}
    return report


if __name__ == "__main__":
    print("REPORT " + json.dumps(main(Path(sys.argv[1]))))
