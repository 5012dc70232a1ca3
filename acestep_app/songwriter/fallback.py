"""The song writer without a model: tags from the prompt's own words, a minimal fitted lyric."""

from __future__ import annotations

import logging
import re
import unicodedata

from acestep_app.songwriter.song import (
    INSTRUMENTAL_LYRICS,
    MAX_WORD_CHARS,
    LyricBudget,
    Song,
    fit_lyrics,
)

logger = logging.getLogger(__name__)


_MUSIC_WORDS = frozenset(
    """
    pop rock jazz blues funk soul disco house techno trance dubstep edm electronic electro ambient
    lofi lo-fi hiphop hip-hop rap trap drill rnb r&b reggae reggaeton latin salsa samba bossa nova
    country folk indie punk metal grunge emo classical orchestral cinematic opera gospel kpop k-pop
    jpop j-pop synthwave synthpop chillwave vaporwave garage drum bass dnb breakbeat afrobeat
    acoustic piano guitar bass drums violin cello strings synth synthesizer saxophone sax trumpet
    flute harp organ ukulele banjo choir beat beats 808 chill calm mellow happy sad dark upbeat
    energetic dreamy melancholic romantic epic uplifting groovy aggressive relaxing nostalgic
    emotional powerful soft slow fast
    """.split()
)
_STOPWORDS = frozenset(
    """
    a an the and or but of to in on at for with about from by into over under is are be was were
    it its this that these those as song music track tune some very make write create generate
    vibe vibes style feel feeling like kind type sounding sound sounds i me my we our you your
    """.split()
)
_VOCAL_PHRASE = re.compile(r"\b(female|male|women|men|girl|boy)(?:'?s)?\s+(?:vocals?|voice|singers?)\b", re.I)
_VOCAL_GENDER = {"women": "female", "girl": "female", "men": "male", "boy": "male"}
_BPM_PHRASE = re.compile(r"\b(\d{2,3})\s*bpm\b", re.I)
_WORD = re.compile(r"[^\W_]+(?:[-'&][^\W_]+)*", re.UNICODE)


def _prompt_words(prompt: str) -> tuple[list[str], list[str]]:
    """``(phrases, words)``: "N bpm" / "female vocals" phrases, and the other non-stopword words."""
    text = unicodedata.normalize("NFKC", prompt)
    phrases = [f"{m.group(1)} bpm" for m in _BPM_PHRASE.finditer(text)]
    phrases += [f"{_VOCAL_GENDER.get(g, g)} vocals" for g in (m.group(1).lower() for m in _VOCAL_PHRASE.finditer(text))]
    text = _VOCAL_PHRASE.sub(" ", _BPM_PHRASE.sub(" ", text))
    words = [
        w for w in _WORD.findall(text)
        if w.lower() not in _STOPWORDS and not w.isdigit() and len(w) <= MAX_WORD_CHARS
    ]
    return phrases, words


def fallback_tags(prompt: str, *, instrumental: bool) -> str:
    """Tags from the prompt's own words: music words, then bpm and vocal phrases, then other words."""
    phrases, words = _prompt_words(prompt)
    words = [w.lower() for w in words]
    if instrumental:
        phrases = [p for p in phrases if not p.endswith("vocals")]
    music = [w for w in words if w in _MUSIC_WORDS]
    other = [w for w in words if w not in _MUSIC_WORDS and len(w) > 2]
    tags: list[str] = []
    for tag in [*music, *phrases, *other, "instrumental" if instrumental else "pop", "melodic"]:
        if tag not in tags:
            tags.append(tag)
    return ", ".join(tags[:8])


def fallback_lyrics(prompt: str, budget: LyricBudget) -> str:
    """A minimal verse/chorus lyric made of the prompt's topic words, fitted to ``budget``.

    Lines are successive 4-word chunks of the prompt's non-music words (cycling); the chorus repeats
    the first chunk. Sections alternate verse, chorus, ..., with a bridge before the last chorus of
    songs of five or more sections.
    """
    _, words = _prompt_words(prompt)
    topic = [w for w in words if w.lower() not in _MUSIC_WORDS] or words or ["la", "la", "la"]
    chunks = [" ".join(topic[i : i + 4]) for i in range(0, len(topic), 4)]
    labels = ["verse" if i % 2 == 0 else "chorus" for i in range(budget.sections)]
    if len(labels) >= 5:
        labels[-2] = "bridge"
    per_section = max(1, budget.max_lines // len(labels))
    sections, verse_line = [], 0
    for label in labels:
        if label == "chorus":
            lines = [chunks[0]] * min(per_section, 2) + [f"oh, {chunks[0]}"] * max(0, per_section - 2)
        else:
            lines = [chunks[(verse_line + i) % len(chunks)] for i in range(per_section)]
            verse_line += per_section
        sections.append("\n".join([f"[{label}]", *lines]))
    return fit_lyrics("\n\n".join(sections), budget)


class FallbackSongWriter:
    """Deterministic song writer with no model (see ``fallback_tags`` and ``fallback_lyrics``).

    Args:
        reason: why no model is used; repeated in every song's logs.
    """

    def __init__(self, reason: str = "no language model configured"):
        self.reason = reason
        self.description = f"deterministic fallback ({reason})"

    def write(self, prompt: str, *, instrumental: bool, duration: float, seed: int) -> Song:
        budget = LyricBudget(duration)
        lyrics = INSTRUMENTAL_LYRICS if instrumental else fallback_lyrics(prompt, budget)
        log = (
            f"prompt: {self.reason}; tags and lyrics come from the deterministic fallback "
            "(tags from the prompt's words, a minimal structured lyric)"
        )
        return Song(fallback_tags(prompt, instrumental=instrumental), lyrics, "fallback", [log])


def fallback_after(failures: list[str], prompt: str, instrumental: bool, duration: float, seed: int,
                    tokens: int) -> Song:
    reason = f"language model output invalid after {len(failures)} attempt(s) ({failures[-1]})"
    logger.warning("song writer: %s", reason)
    song = FallbackSongWriter(reason).write(prompt, instrumental=instrumental, duration=duration, seed=seed)
    return Song(song.tags, song.lyrics, "fallback", song.logs, tokens)


def attempt_seed(seed: int, attempt: int) -> int:
    return (seed + 7919 * attempt) % (2**63)


# ----------------------------------------------------------------------------------------------
# Local model (transformers)
# ----------------------------------------------------------------------------------------------

# Used when a tokenizer ships without a chat template (ChatML, as Qwen and SmolLM2 use).
