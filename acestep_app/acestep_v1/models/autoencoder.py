"""``MusicDCAE``: ACE-Step latents (B, 8, 16, T) <-> stereo waveforms.

The DiT works in the latent space of a mel-spectrogram deep-compression autoencoder (stock diffusers
``AutoencoderDC``, checkpoint subfolder ``music_dcae_f8c8/``). Decoding un-scales the latent, runs the
DCAE decoder to a normalised stereo log-mel (B, 2, 128, 8T), maps it back to natural-log mel and
vocodes each channel (``music_vocoder/``) at 44.1 kHz: 4096 samples per latent frame. The result is
optionally resampled (48 kHz is what the reference pipeline returns).

Encoding (editing spec §2) runs the other way in the model dtype: resample to 44.1 kHz, right-pad
to whole latent frames, the vocoder's log-mel front end, normalise, DCAE encoder, scale/shift.

``decode(..., chunk_frames=n)`` decodes in windows of ``n`` latent frames that overlap by a context
on each side; only each window's centre is kept and neighbouring centres are cross-faded, so peak
activation memory depends on ``n``, not on the duration. Everything in the models is local except
the DCAE's linear attention, so chunked output differs from a whole decode only slightly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderDC
from torch import nn

from acestep_app.acestep_v1.models.loading import strict_from_pretrained
from acestep_app.audio.resample import resample
from acestep_app.acestep_v1.models.vocoder import ADaMoSHiFiGANV1

DCAE_SUBFOLDER = "music_dcae_f8c8"
VOCODER_SUBFOLDER = "music_vocoder"

LATENT_SCALE = 0.1786
LATENT_SHIFT = -1.9091
MIN_LOG_MEL = -11.0
MAX_LOG_MEL = 3.0
MEL_FRAMES_PER_LATENT = 8
HOP_LENGTH = 512
SAMPLES_PER_LATENT = MEL_FRAMES_PER_LATENT * HOP_LENGTH  # 4096 at 44.1 kHz
NATIVE_SAMPLE_RATE = 44100
CROSSFADE_SAMPLES = 2048  # centred on each chunk boundary, well inside the overlap context


def chunk_windows(frames: int, chunk_frames: int, overlap_frames: int) -> list[tuple[int, int, int, int]]:
    """Split ``frames`` latent frames into decode windows.

    Returns ``(start, end, keep_start, keep_end)`` per window: the window decodes latent frames
    [start, end) and owns output frames [keep_start, keep_end). Owned ranges tile [0, frames); each has
    ``overlap_frames`` of context on every side that is not a true edge. All windows are
    ``min(chunk_frames, frames)`` long (the last one is shifted back to end at ``frames``).
    """
    if overlap_frames < 0 or chunk_frames < 2 * overlap_frames + 1:
        raise ValueError(f"chunk_frames ({chunk_frames}) must exceed twice overlap_frames ({overlap_frames})")
    if frames <= chunk_frames:
        return [(0, frames, 0, frames)]
    hop = chunk_frames - 2 * overlap_frames
    count = 1 + -(-(frames - chunk_frames) // hop)
    windows = []
    for k in range(count):
        keep_start = 0 if k == 0 else k * hop + overlap_frames
        keep_end = frames if k == count - 1 else (k + 1) * hop + overlap_frames
        start = min(k * hop, frames - chunk_frames)
        windows.append((start, start + chunk_frames, keep_start, keep_end))
    return windows


def _fade_weights(length: int, fade_in: bool, fade_out: bool, fade: int, device: torch.device) -> torch.Tensor:
    """Per-sample weights over [keep_start - fade/2, keep_end + fade/2): linear ramps at inner boundaries."""
    weights = torch.ones(length, device=device)
    ramp = (torch.arange(fade, device=device, dtype=torch.float32) + 0.5) / fade
    if fade_in:
        weights[:fade] = ramp
    if fade_out:
        weights[length - fade :] = 1.0 - ramp
    return weights


class MusicDCAE(nn.Module):
    """DCAE decoder + vocoder with ACE-Step's latent scaling; see the module docstring."""

    def __init__(self, dcae: AutoencoderDC, vocoder: ADaMoSHiFiGANV1):
        super().__init__()
        self.dcae = dcae
        self.vocoder = vocoder
        self.eval()

    @classmethod
    def from_pretrained(
        cls,
        checkpoint_root: str | Path,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> MusicDCAE:
        """Load ``music_dcae_f8c8/`` and ``music_vocoder/`` under ``checkpoint_root`` strictly."""
        root = Path(checkpoint_root)
        options = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
        dcae = strict_from_pretrained(
            AutoencoderDC.from_pretrained, root / DCAE_SUBFOLDER, name="AutoencoderDC", device=device, **options
        )
        vocoder = ADaMoSHiFiGANV1.from_pretrained(root / VOCODER_SUBFOLDER, device=device, **options)
        return cls(dcae, vocoder)

    @property
    def device(self) -> torch.device:
        return next(self.dcae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.dcae.parameters()).dtype

    # -- encoding ---------------------------------------------------------------------------------

    def waveform_to_native(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """(B, 2, N) at ``sample_rate`` -> (B, 2, 4096 L) at 44.1 kHz in the model dtype, zero-padded on the right.

        The waveform is cast to the model dtype before resampling, as the reference does.
        """
        wave = resample(waveform.to(self.device, self.dtype), sample_rate, NATIVE_SAMPLE_RATE, dtype=self.dtype)
        return F.pad(wave, (0, -wave.shape[-1] % SAMPLES_PER_LATENT))

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 2, N) at 44.1 kHz -> natural-log mel (B, 2, 128, N / 512) in the model dtype, item by item."""
        mel_transform = self.vocoder.mel_transform
        return torch.stack([mel_transform(item, dtype=self.dtype) for item in wave])

    @staticmethod
    def normalise_log_mel(log_mel: torch.Tensor) -> torch.Tensor:
        """Natural-log mel -> the DCAE's input range (inverse of :meth:`latents_to_log_mel`'s mapping)."""
        unit = (log_mel - MIN_LOG_MEL) / (MAX_LOG_MEL - MIN_LOG_MEL)
        return (unit - 0.5) / 0.5

    def encode_mel(self, normalised: torch.Tensor) -> torch.Tensor:
        """Normalised mel (B, 2, 128, F) -> raw DCAE encoder output (B, 8, 16, F / 8), item by item."""
        return torch.cat([self.dcae.encoder(item[None]) for item in normalised])

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Stereo waveforms (B, 2, N) at ``sample_rate`` -> latents (B, 8, 16, ceil(N44 / 4096)).

        N44 is the length at 44.1 kHz. No chunking: the whole clip goes through the encoder at once.
        """
        if waveform.ndim != 3 or waveform.shape[1] != 2:
            raise ValueError(f"waveform must be (B, 2, N) stereo, got shape {tuple(waveform.shape)}")
        if waveform.shape[-1] < 1:
            raise ValueError("waveform has no samples to encode")
        mel = self.log_mel(self.waveform_to_native(waveform, sample_rate))
        raw = self.encode_mel(self.normalise_log_mel(mel))
        # Channels-last, as the reference's encoder output is: in bfloat16 the DiT rounds differently
        # for channels-last latents, and the editing tasks keep this layout (editing.memory_format_of).
        return ((raw - LATENT_SHIFT) * LATENT_SCALE).contiguous(memory_format=torch.channels_last)

    # -- decoding ---------------------------------------------------------------------------------

    def latents_to_log_mel(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 8, 16, T) -> natural-log mel (B, 2, 128, 8T) in the model dtype.

        The de-normalisation runs in the model dtype, four separately rounded ops, before anything is
        cast to float32: the reference's vocoder input in bfloat16 (docs/fidelity.md).
        """
        z = latents.to(device=self.device, dtype=self.dtype) / LATENT_SCALE + LATENT_SHIFT
        normalised = self.dcae.decoder(z)
        return (normalised * 0.5 + 0.5) * (MAX_LOG_MEL - MIN_LOG_MEL) + MIN_LOG_MEL

    def vocode(self, log_mel: torch.Tensor, *, per_channel: bool = True) -> torch.Tensor:
        """Log-mel (2, 128, F) -> waveform (2, 512 F) float32 at 44.1 kHz (channels one at a time by default)."""
        if per_channel:
            return torch.cat([self.vocoder.decode(log_mel[c : c + 1])[:, 0].float() for c in range(len(log_mel))])
        return self.vocoder.decode(log_mel)[:, 0].float()

    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        sample_rate: int = 48000,
        chunk_frames: int | None = None,
        overlap_frames: int | None = None,
    ) -> torch.Tensor:
        """Latents (B, 8, 16, T) -> waveforms (B, 2, N) float32 on the CPU.

        N = 4096 T at 44 100 Hz, or ceil(4096 T * sample_rate / 44100) after resampling. Items are
        decoded one at a time, as in the reference. ``chunk_frames`` bounds memory (see module
        docstring); ``overlap_frames`` is the context per side (default ``chunk_frames // 4``).
        """
        if latents.ndim != 4:
            raise ValueError(f"latents must be (B, 8, 16, T), got shape {tuple(latents.shape)}")
        if latents.shape[-1] < 1:
            raise ValueError("latents have no frames to decode")
        if chunk_frames is None:
            waves = [self._decode_whole(latent, sample_rate) for latent in latents]
        else:
            overlap = chunk_frames // 4 if overlap_frames is None else overlap_frames
            waves = [self._decode_chunked(latent, sample_rate, chunk_frames, overlap) for latent in latents]
        return torch.stack(waves)

    def _decode_whole(self, latent: torch.Tensor, sample_rate: int) -> torch.Tensor:
        wave = self.vocode(self.latents_to_log_mel(latent[None])[0])
        return resample(wave, NATIVE_SAMPLE_RATE, sample_rate).cpu()

    def _decode_chunked(self, latent: torch.Tensor, sample_rate: int, chunk_frames: int, overlap: int) -> torch.Tensor:
        frames = latent.shape[-1]
        wave = torch.zeros(2, frames * SAMPLES_PER_LATENT)
        fade = min(CROSSFADE_SAMPLES, overlap * SAMPLES_PER_LATENT)
        half = fade // 2
        for start, end, keep_start, keep_end in chunk_windows(frames, chunk_frames, overlap):
            log_mel = self.latents_to_log_mel(latent[None, ..., start:end])[0]
            piece = self.vocode(log_mel, per_channel=False)
            fade_in, fade_out = keep_start > 0, keep_end < frames
            lo = keep_start * SAMPLES_PER_LATENT - (half if fade_in else 0)
            hi = keep_end * SAMPLES_PER_LATENT + (fade - half if fade_out else 0)
            offset = start * SAMPLES_PER_LATENT
            weights = _fade_weights(hi - lo, fade_in and fade > 0, fade_out and fade > 0, fade, piece.device)
            wave[:, lo:hi] += (piece[:, lo - offset : hi - offset] * weights).cpu()
        block = chunk_frames * SAMPLES_PER_LATENT
        return resample(wave, NATIVE_SAMPLE_RATE, sample_rate, block_samples=block, device=self.device)
