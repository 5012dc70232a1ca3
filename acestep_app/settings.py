"""Typed loader for ``infra.toml``, the single deploy and runtime config.

``Settings.load()`` reads, in order of precedence: an explicit path, the file named by
``$ACESTEP_INFRA``, ``infra.toml`` at the repository root. Installed without the repository (no
such file), it falls back to the built-in defaults below, which mirror the shipped ``infra.toml``;
a deploy that customises the file must ship it (and point ``ACESTEP_INFRA`` at it) or build its
``Settings`` at deploy time. Unknown keys and wrongly typed values are errors that name the key.

Sections: ``[app]``, ``[engine]``, ``[output]``, ``[quality]``, ``[weights]``, ``[fal]``, ``[modal]``, ``[security]``,
``[audio_input]``, ``[webhooks]``, ``[lora]``, ``[metrics]``, ``[server]``, ``[queue]``, ``[storage]``, and ``[models."<family>"]`` per model family (each family validates its own). Settings are frozen pydantic models, so they pickle (fal ships the
App by value) and compare by value.
"""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

logger = logging.getLogger(__name__)

INFRA_ENV = "ACESTEP_INFRA"
REPO_INFRA_PATH = Path(__file__).resolve().parents[1] / "infra.toml"

_SECTION_CONFIG = ConfigDict(extra="forbid", strict=True, frozen=True)


class SettingsError(ValueError):
    """``infra.toml`` is missing, unreadable, or has an unknown or invalid key."""


class AppSection(BaseModel):
    model_config = _SECTION_CONFIG

    name: str = "acestep-app"
    price_per_second_usd: float = Field(default=0.0002, ge=0, allow_inf_nan=False)
    # the model families served (acestep_app/<family>/family.py); the first is the primary one
    families: list[str] = Field(default_factory=lambda: ["acestep-v1"], min_length=1)


class EngineSection(BaseModel):
    model_config = _SECTION_CONFIG

    weights_dir: str = ""
    device: str = Field(default="auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    cpu_bf16_kernels: Literal["reference", "native"] = "reference"
    batched_guidance: bool = True
    cross_attention_cache: bool = True
    compile: bool = False
    threads: int = Field(default=0, ge=0)
    decode_chunk_frames: Annotated[int, Field(ge=0)] | Literal["auto"] = 0
    lyric_vocab: str = ""
    prompt_backend: Literal["transformers", "openai", "fallback"] = "transformers"
    llm_dir: str = ""


class OutputSection(BaseModel):
    model_config = _SECTION_CONFIG

    format: Literal["wav", "flac", "mp3", "ogg"] = "wav"  # file format of every endpoint's audio


class QualitySection(BaseModel):
    model_config = _SECTION_CONFIG

    takes: int = Field(default=1, ge=1, le=8)  # >1: sample this many seeds, return the best-sung take
    bill_takes: Literal["returned", "generated"] = "returned"  # bill the returned take, or every take generated
    batch_takes: bool = False  # one batched run for all takes (faster; replays match only to float rounding)
    asr_dir: str = ""  # "" = <weights>/asr (the pinned Whisper model, pulled when takes > 1)


class WeightsSection(BaseModel):
    model_config = _SECTION_CONFIG

    repo: str = "ACE-Step/ACE-Step-v1-3.5B"
    revision: str = Field(default="82cd0d7b6322bd28cd4e830fe675ddb6180ce36c", pattern=r"^[0-9a-f]{40}$")
    cache_dir: str = ""


class FalSection(BaseModel):
    model_config = _SECTION_CONFIG

    app_name: str = "ace-step"
    app_auth: Literal["private", "public", "shared"] = "private"
    machine_type: str | list[str] = "GPU-H100"
    num_gpus: int = Field(default=1, ge=1)
    keep_alive: int = Field(default=300, ge=0)
    min_concurrency: int = Field(default=0, ge=0)
    max_concurrency: int = Field(default=4, ge=1)
    request_timeout: int = Field(default=600, ge=1)
    startup_timeout: int = Field(default=1800, ge=1)


class ModalSection(BaseModel):
    model_config = _SECTION_CONFIG

    gpu: str | list[str] = "H100"
    timeout: int = Field(default=600, ge=1)
    scaledown_window: int = Field(default=300, ge=2)
    max_inputs: int = Field(default=1, ge=1)
    volume: str = "acestep-weights"
    secret: str = ""
    files_volume: str = "acestep-files"
    api_key_secret: str = "acestep-api-key"
    max_containers: int = Field(default=4, ge=1)  # GPU containers at most: bounds what a flood of submits costs


class SecuritySection(BaseModel):
    model_config = _SECTION_CONFIG

    allow_private_urls: bool = False
    dns_timeout_seconds: float = Field(default=5.0, gt=0, allow_inf_nan=False)


class AudioInputSection(BaseModel):
    model_config = _SECTION_CONFIG

    max_download_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    download_timeout_seconds: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    max_redirects: int = Field(default=5, ge=0)
    max_duration_seconds: float = Field(default=240.0, gt=0, allow_inf_nan=False)
    min_duration_seconds: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    max_request_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    # decoded samples (rate x seconds x channels) one input may decode to: 240 s of 48 kHz stereo
    max_decoded_samples: int = Field(default=240 * 48_000 * 2, ge=1)

    @model_validator(mode="after")
    def _durations_ordered(self) -> AudioInputSection:
        if self.min_duration_seconds > self.max_duration_seconds:
            raise ValueError("min_duration_seconds is larger than max_duration_seconds")
        return self


class WebhooksSection(BaseModel):
    """Delivery of fal-style queue webhooks (see :mod:`acestep_app.serving.webhooks.outbox`)."""

    model_config = _SECTION_CONFIG

    max_attempts: int = Field(default=10, ge=1)
    retry_window_seconds: float = Field(default=7200.0, gt=0, allow_inf_nan=False)
    timeout_seconds: float = Field(default=15.0, gt=0, allow_inf_nan=False)
    concurrency: int = Field(default=4, ge=1)


class ServerSection(BaseModel):
    """The local server's exposure (``acestep-app serve``)."""

    model_config = _SECTION_CONFIG

    allowed_hosts: list[str] = Field(default_factory=list)  # [] = the bound address plus localhost; "*" = any
    cors_origins: list[str] = Field(default_factory=list)  # [] = no CORS; ["*"] or explicit origins
    max_sync_waiters: int = Field(default=32, ge=1)  # synchronous calls waiting at once; more get a 429


class QueueSection(BaseModel):
    model_config = _SECTION_CONFIG

    max_pending: int = Field(default=256, ge=1)  # queued + running jobs of all keys; more get a 429
    max_pending_per_key: int = Field(default=64, ge=1)


class StorageSection(BaseModel):
    model_config = _SECTION_CONFIG

    retention_days: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    prune_interval_s: float = Field(default=3600.0, gt=0, allow_inf_nan=False)
    url_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
class LoraAdapterEntry(BaseModel):
    """One deploy-time adapter (``[[lora.adapters]]``), applied to every request of its model family."""

    model_config = _SECTION_CONFIG

    path: str = Field(min_length=1)  # https URL, Hub repo (owner/name[@revision][/sub/path]), local path, manifest name
    scale: float = Field(default=1.0, allow_inf_nan=False)
    model: str = "acestep-v1"  # the model family it was trained for (the CLI's --model names)


class LoraSection(BaseModel):
    """LoRA adapters: deploy-time ones, per-request ones (off by default), sources, caches and limits."""

    model_config = _SECTION_CONFIG

    per_request: bool = False  # true: generation and editing endpoints take an optional `loras` list
    scaling: Literal["reference", "adapter"] = "reference"  # see docs/lora.md
    max_download_bytes: int = Field(default=2 * 1024**3, ge=1)  # per adapter file
    download_timeout_seconds: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    hub_endpoint: str = ""  # "" = huggingface_hub's (HF_ENDPOINT, else https://huggingface.co)
    cache_dir: str = ""  # "" = <weights cache>/loras
    disk_cache_bytes: int = Field(default=20 * 1024**3, ge=0)
    memory_cache_bytes: int = Field(default=4 * 1024**3, ge=0)
    adapters: list[LoraAdapterEntry] = []


class MetricsSection(BaseModel):
    """``/metrics`` (Prometheus text format; see :mod:`acestep_app.serving.metrics`)."""

    model_config = _SECTION_CONFIG

    enabled: bool = True
    # the environment variable holding the scrape key; set, /metrics needs ``Authorization: Bearer <key>``;
    # unset or empty, only loopback clients may scrape
    key_env: str = Field(default="ACESTEP_METRICS_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class Settings(BaseModel):
    """Every setting of the app, one attribute per ``infra.toml`` section."""

    model_config = _SECTION_CONFIG

    app: AppSection = AppSection()
    engine: EngineSection = EngineSection()
    output: OutputSection = OutputSection()
    quality: QualitySection = QualitySection()
    weights: WeightsSection = WeightsSection()
    fal: FalSection = FalSection()
    modal: ModalSection = ModalSection()
    security: SecuritySection = SecuritySection()
    audio_input: AudioInputSection = AudioInputSection()
    webhooks: WebhooksSection = WebhooksSection()
    server: ServerSection = ServerSection()
    queue: QueueSection = QueueSection()
    storage: StorageSection = StorageSection()
    lora: LoraSection = LoraSection()
    metrics: MetricsSection = MetricsSection()
    # [models."<family>"]: each family's own section, validated by that family (ModelFamily.config)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> Settings:
        """Load ``path``, else ``$ACESTEP_INFRA``, else the repository's ``infra.toml``, else defaults."""
        if path is None and os.environ.get(INFRA_ENV):
            path = os.environ[INFRA_ENV]
        if path is None:
            if not REPO_INFRA_PATH.is_file():
                logger.warning("no infra.toml at %s and %s unset: using built-in defaults", REPO_INFRA_PATH, INFRA_ENV)
                return cls()
            path = REPO_INFRA_PATH
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise SettingsError(f"cannot read settings file {path}: {error}") from error
        logger.debug("settings from %s", path)
        return cls.from_toml(text, source=str(path))

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> Settings:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"{source}: invalid TOML: {error}") from error
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> Settings:
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise SettingsError(_describe(error, source)) from None


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid settings"]
    for item in error.errors():
        section, *rest = [str(part) for part in item["loc"]]
        key = ".".join(rest)
        where = f"[{section}] {key}" if key else f"[{section}]"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown {'key' if key else 'section'}")
        else:
            lines.append(f"  {where}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)
