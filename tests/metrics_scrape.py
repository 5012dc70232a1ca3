"""Prometheus' text format read back into ``{(sample name, labels): value}`` for assertions."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def parse(text: str) -> dict[tuple, float]:
    """Every sample of a scrape; every family's name must start ``acestep_``."""
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("acestep_"), family.name
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))
