"""What the parity runners share."""

from __future__ import annotations

from pathlib import Path

from acestep_app.errors import WeightsError


def find_lyric_vocab(checkpoint: Path) -> Path:
    """``<checkpoint>/lyric_tokenizer/vocab.json``, else the one ``acestep-app weights pull`` fetched."""
    from acestep_app.settings import Settings
    from acestep_app.weights.store import find_lyric_vocab as find

    try:
        return find(checkpoint, Settings.load())
    except WeightsError as error:
        raise WeightsError(f"{error}; or pass --lyric-vocab PATH") from None
