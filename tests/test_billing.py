"""Billing units: seconds of returned audio rounded to milliseconds, header without exponents."""

from __future__ import annotations

import math

import pytest

from acestep_app.engine.family import get_family
from acestep_app.serving.billing import BILLING_HEADER, billable_seconds, header_value, price_usd
from acestep_app.settings import Settings


def test_header_name():
    assert BILLING_HEADER == "x-fal-billable-units"


@pytest.mark.parametrize(
    ("num_samples", "sample_rate", "seconds"),
    [
        (48_000 * 60, 48_000, 60.0),
        (0, 48_000, 0.0),
        (1, 48_000, 0.0),  # 0.02 ms
        (24, 48_000, 0.0),  # exactly 0.5 ms: half-even rounding, in exact decimal
        (72, 48_000, 0.002),  # 1.5 ms
        (2_875_559, 48_000, 59.907),  # 645 latent frames of 4096/44100 s at 48 kHz
        (44_100 * 240, 44_100, 240.0),
        (1_234_567, 44_100, 27.995),
    ],
)
def test_billable_seconds(num_samples, sample_rate, seconds):
    assert billable_seconds(num_samples, sample_rate) == seconds


@pytest.mark.parametrize(("num_samples", "sample_rate"), [(-1, 48_000), (10, 0), (1.5, 48_000), (10, -44_100)])
def test_billable_seconds_rejects_nonsense(num_samples, sample_rate):
    with pytest.raises(ValueError):
        billable_seconds(num_samples, sample_rate)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(60.0, "60"), (59.907, "59.907"), (6.5, "6.5"), (0, "0"), (0.0, "0"), (1e-7, "0"), (0.0015, "0.002"),
     (1e21, "1000000000000000000000"), (240, "240"), (0.1 + 0.2, "0.3")],
)
def test_header_value_is_plain_decimal(seconds, text):
    assert header_value(seconds) == text
    assert "e" not in text.lower()


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf, True, "5"])
def test_header_value_rejects_nonsense(seconds):
    with pytest.raises(ValueError):
        header_value(seconds)


def test_price_is_the_exact_decimal_product():
    per_second = Settings().app.price_per_second_usd
    assert price_usd(60, per_second) == 0.012
    assert price_usd(5000, per_second) == 1.0  # fal: "For $1 you can run generate 5000 seconds"
    assert price_usd(59.907, per_second) == 0.0119814
    assert price_usd(0, per_second) == 0.0
    assert price_usd(10, 0.001) == 0.01


def test_an_endpoint_is_priced_by_its_family_else_by_the_app():
    v1 = get_family("acestep-v1")
    custom = Settings.from_dict({"app": {"price_per_second_usd": 0.001}})
    assert all(endpoint.price(custom) == 0.001 for endpoint in v1.endpoints)
