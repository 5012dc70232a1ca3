"""Billing: one unit is one second of returned audio, priced per endpoint (``Endpoint.price``; ``[app].price_per_second_usd`` by default).

fal sells ``fal-ai/ace-step/prompt-to-audio`` at 0.0002 USD per second of generated audio, and a fal
app reports billable units in the ``x-fal-billable-units`` response header. The Modal and local
endpoints report the same units in the same header and in their usage records.

Units are the length of the audio actually returned (samples / sample rate), rounded to whole
milliseconds: the model's latent grid makes the returned length differ slightly from the requested
``duration`` (60 s asks for 645 frames of 4096/44100 s, i.e. 59.907 s), and a caller should pay for
what they get. Milliseconds keep the header short and exact in decimal while losing at most 0.5 ms
(1e-7 USD) per request. The header is a plain decimal (no exponent, no trailing zeros): "59.907",
"60", "0".
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

BILLING_HEADER = "x-fal-billable-units"
_MILLISECOND = Decimal("0.001")


def billable_seconds(num_samples: int, sample_rate: int) -> float:
    """Seconds of audio in ``num_samples`` frames at ``sample_rate`` Hz, rounded to milliseconds.

    ``num_samples`` counts frames per channel (the last dimension of a ``(channels, N)`` waveform).
    """
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative integer, got {num_samples!r}")
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    seconds = Decimal(int(num_samples)) / Decimal(int(sample_rate))
    return float(seconds.quantize(_MILLISECOND, rounding=ROUND_HALF_EVEN))


def price_usd(seconds: float, per_second: float) -> float:
    """What ``seconds`` of audio cost at ``per_second`` USD (exact decimal product)."""
    _check_seconds(seconds)
    return float(Decimal(repr(float(seconds))) * Decimal(repr(float(per_second))))


def header_value(seconds: float) -> str:
    """``seconds`` as the ``x-fal-billable-units`` value: milliseconds at most, no exponent."""
    _check_seconds(seconds)
    text = format(Decimal(repr(float(seconds))).quantize(_MILLISECOND, rounding=ROUND_HALF_EVEN), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _check_seconds(seconds: float) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
        raise ValueError(f"billable seconds must be a finite non-negative number, got {seconds!r}")
