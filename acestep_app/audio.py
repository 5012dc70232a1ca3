"""Waveform -> audio file bytes. The reference writes 48 kHz stereo float32 WAV; so do we."""

from __future__ import annotations

import io

import numpy as np
import soundfile

WAV_CONTENT_TYPE = "audio/wav"


def wav_bytes(waveform: np.ndarray, sample_rate: int) -> bytes:
    """``(channels, N)`` float32 samples -> a WAV file (IEEE float, as the reference saves it)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.ascontiguousarray(waveform.T), sample_rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()
