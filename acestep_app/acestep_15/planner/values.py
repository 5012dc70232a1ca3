"""What the 5 Hz LM may write: the metadata value sets, the audio-code vocabulary and the task
instructions (facts sheet §3; the official constants at ace-step/ACE-Step-1.5 f30aee4).

Plain data, no imports beyond ``re``: the schema, the parity runner and the constraint builder all
read it.
"""

from __future__ import annotations

import re

# The system message of every planner prompt is "# Instruction\n{instruction}\n\n".
INSTRUCTIONS = {
    "generate": "Generate audio semantic tokens based on the given conditions:",
    "understand": "Understand the given musical conditions and describe the audio semantics accordingly:",
    "inspire": "Expand the user's input into a more detailed and specific musical description:",
    "rewrite": "Format the user's input into a more detailed and specific musical description:",
}

# Stands for an empty user turn, and for "no negative prompt" in the LM's guidance.
NO_USER_INPUT = "NO USER INPUT"
INSTRUMENTAL_LYRICS = "[Instrumental]"

BPM_RANGE = (30, 300)
DURATION_RANGE = (10, 600)  # seconds; the official GPU tiers lower the top, never below 10
TIME_SIGNATURES = (2, 3, 4, 6)

_NOTES = "ABCDEFG"
_ACCIDENTALS = ("", "#", "b", "♯", "♭")
_MODES = ("major", "minor")
# 70 strings, in the order the official constants build their set: note, accidental, mode.
KEYSCALES = tuple(f"{note}{accidental} {mode}" for note in _NOTES for accidental in _ACCIDENTALS for mode in _MODES)

# ISO 639-1 codes (plus "yue" and "unknown") the language field may take.
LANGUAGES = (
    "ar", "az", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fr", "he", "hi", "hr",
    "ht", "hu", "id", "is", "it", "ja", "ko", "la", "lt", "ms", "ne", "nl", "no", "pa", "pl", "pt", "ro",
    "ru", "sa", "sk", "sr", "sv", "sw", "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "yue", "zh", "unknown",
)  # fmt: skip

# The chain-of-thought fields, in the order the LM writes them. genres is written only in the
# understand / inspire / format modes; the audio-code phase's CoT never carries it.
COT_FIELDS = ("bpm", "caption", "duration", "genres", "keyscale", "language", "timesignature")
PLAN_FIELDS = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")
# With these four given by the user, phase 1 has nothing to decide and is skipped.
REQUIRED_METADATA = ("bpm", "keyscale", "timesignature", "duration")

CODES_PER_SECOND = 5
CODEBOOK_SIZE = 64000  # FSQ levels 8·8·8·5·5·5
AUDIO_CODE_TOKEN = re.compile(r"^<\|audio_code_(\d+)\|>$")
AUDIO_CODE_ANYWHERE = re.compile(r"<\|audio_code_\d+\|>")

# Context length the official runtime gives the LM (2048 in its low-memory mode).
MAX_MODEL_LEN = 4096


def audio_code(index: int) -> str:
    """``<|audio_code_{index}|>``, the token for one 5 Hz semantic code."""
    return f"<|audio_code_{index}|>"


def code_count(duration: float) -> int:
    """Codes the LM writes for ``duration`` seconds: 5 a second, rounded down."""
    return int(duration * CODES_PER_SECOND)
