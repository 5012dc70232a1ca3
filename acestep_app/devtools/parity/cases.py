"""Reference parity cases (``acestep-app parity CASES_DIR``): this install against the reference's numerics.

A cases directory holds ``<name>.json`` + ``<name>.safetensors`` pairs in the format of the shared
``fixtures/acestep-v1-tiny/cases`` (produced by the reference ACE-Step v1 at commit
d612523f50e252c0e138e68ae75b06223f96e934). Each case is run with our loaders and pipeline and
compared within the tolerances below; one line per case, then ``N passed, M failed``.

A case with ``"dtype": "bfloat16"`` (``fixtures/acestep-v1-tiny-bf16``) is run by a pipeline built in
bfloat16 and held to that set's README: everything exact up to the final latents, the waveform within
5e-3. Such exactness needs the reference's CPU kernels (:mod:`acestep_app.engine.cpu_kernels`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from acestep_app.devtools.parity.common import find_lyric_vocab
from acestep_app.engine.cpu_kernels import intel_cpu, pin_reference_cpu_kernels, use_reference_cpu_kernels
from acestep_app.errors import WeightsError

REFERENCE_COMMIT = "d612523f50e252c0e138e68ae75b06223f96e934"
COMPONENT_ATOL = 1e-4  # component forwards (text encoder, transformer, DCAE, vocoder), scheduler steps
LATENT_ATOL = 1e-3  # end-to-end final latents (errors compound over the steps)
WAVEFORM_ATOL = 1e-3  # decoded end-to-end waveforms
EXACT = 0.0  # token ids, masks, timesteps, sigmas, initial noise
# bfloat16 cases: the reference is bit-reproducible up to the final latents, and its bf16 trajectories
# are chaotic (one rounding done differently grows to 5e-2 .. 2e-1 in the final latents), so only
# exact separates right from wrong. The waveform: 2.5x the reference's own thread-count spread
# (2.0e-3, from one bf16 ConvTranspose1d in the vocoder), fixture README.
BF16_WAVEFORM_ATOL = 5e-3


@dataclass(frozen=True)
class Tolerances:
    component: float  # component outputs, encoder states, encode path, scheduler steps
    latents: float  # latent trajectories and final latents
    waveform: float  # decoded end-to-end waveforms


TOLERANCES = {
    "float32": Tolerances(COMPONENT_ATOL, LATENT_ATOL, WAVEFORM_ATOL),
    "bfloat16": Tolerances(EXACT, EXACT, BF16_WAVEFORM_ATOL),
}


@dataclass
class CaseResult:
    name: str
    checks: list[tuple[str, float, float]] = field(default_factory=list)  # (what, max error, tolerance)
    error: str | None = None
    seconds: float = 0.0
    dtype: str = "float32"

    @property
    def passed(self) -> bool:
        return self.error is None and all(err <= tol for _, err, tol in self.checks)

    def line(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        if self.error is not None:
            return f"{status} {self.name}: {self.error}"
        worst = [f"{what} {err:.2e}/{tol:.0e}" for what, err, tol in self.checks if err > tol] or [
            f"{len(self.checks)} checks, max err {max((e for _, e, _ in self.checks), default=0.0):.2e}"
        ]
        return f"{status} {self.name} ({self.seconds:.1f}s): " + "; ".join(worst)


INTEL_FFT_NOTE = (
    "note: on an Intel CPU MKL's FFT takes other code paths than on the reference's AMD one, so a bfloat16 case "
    "that encodes a source clip can differ from its first encoded latents on; --stored-source-latents checks the "
    "rest (docs/fidelity.md)"
)


class ParityRunner:
    """Loads components lazily (a tokenizer case needs no transformer) and runs cases by kind."""

    def __init__(
        self,
        checkpoint: Path,
        lyric_vocab: Path | None,
        batched_guidance: bool = False,
        pipelines: dict | None = None,
        stored_source_latents: bool = False,
    ):
        """``pipelines``: another runner's ``pipelines`` to share its loaded models (dtype name -> pipeline).

        ``stored_source_latents``: editing cases take their source/reference latents from the case
        instead of encoding the clip, to check the diffusion alone (see INTEL_FFT_NOTE).
        """
        pin_reference_cpu_kernels()  # before any kernel runs (bfloat16 cases need the reference's)
        self.checkpoint = checkpoint
        self.lyric_vocab = lyric_vocab or find_lyric_vocab(checkpoint)
        self.batched_guidance = batched_guidance
        self.stored_source_latents = stored_source_latents
        self.case_dir = Path(".")  # the running case's folder; its audio paths are relative to it
        self.dtype = "float32"  # the running case's ``dtype``
        self.pipelines = {} if pipelines is None else pipelines
        self._merged = {}  # dtype -> the LoRA merge state of that pipeline's transformer

    @property
    def tolerances(self) -> Tolerances:
        return TOLERANCES[self.dtype]

    @property
    def pipeline(self):
        """The pipeline in the running case's dtype."""
        return self.pipeline_in(self.dtype)

    def pipeline_in(self, dtype: str):
        """The pipeline in ``dtype`` ("float32" or "bfloat16"), loaded once; bfloat16 as the engine runs it."""
        if dtype not in self.pipelines:
            import torch

            from acestep_app.acestep_v1.pipeline import AceStepPipeline

            pipeline = AceStepPipeline.from_pretrained(
                self.checkpoint, lyric_vocab=self.lyric_vocab, dtype=getattr(torch, dtype)
            )
            if dtype == "bfloat16" and use_reference_cpu_kernels():
                pipeline.transformer.set_conv_impl("conv")  # the reference's convolutions, as the engine runs them
            self.pipelines[dtype] = pipeline
        return self.pipelines[dtype]

    def use_lora(self, lora: dict | None) -> None:
        """Merge the case's adapter (``lora.path`` relative to the case, at ``lora.scale``) or none.

        ``unload_before_call``: load it, unload it, then run (the expected numbers are the base model's).
        """
        from acestep_app.acestep_v1.lora import NO_ADAPTERS, AdapterUse, MergedAdapters, plan_merge
        from acestep_app.lora.library import AdapterLibrary
        from acestep_app.settings import Settings

        if self.dtype not in self._merged:
            self._merged[self.dtype] = MergedAdapters(self.pipeline.transformer)
        merged = self._merged[self.dtype]
        if lora is None:
            merged.use(NO_ADAPTERS)
            return
        adapter = AdapterLibrary(Settings()).load(str((self.case_dir / lora["path"]).resolve()), trusted=True)
        merged.use(plan_merge(self.pipeline.transformer, [AdapterUse(adapter, lora["scale"])], "reference"))
        if lora.get("unload_before_call"):
            merged.use(NO_ADAPTERS)

    def run(self, case_path: Path) -> CaseResult:
        import torch
        from safetensors.torch import load_file

        case = json.loads(case_path.read_text())
        result = CaseResult(case.get("case", case_path.stem))
        started = time.perf_counter()
        try:
            tensor_file = case_path.with_suffix(".safetensors")
            tensors = load_file(tensor_file) if tensor_file.exists() else {}
            self.case_dir = case_path.parent
            self.dtype = result.dtype = case.get("dtype", "float32")
            if self.dtype not in TOLERANCES:
                raise ValueError(f"unknown case dtype {self.dtype!r}")
            check = KINDS.get(case.get("kind"))
            if check is None:
                raise ValueError(f"unknown case kind {case.get('kind')!r}")
            with torch.inference_mode():
                for what, actual, expected, tol in check(self, case, tensors):
                    result.checks.append((what, _max_error(actual, expected), tol))
        except Exception as error:  # a broken case is reported as a failure, the others still run
            result.error = f"{type(error).__name__}: {error}"
        result.seconds = time.perf_counter() - started
        return result


Check = tuple[str, object, object, float]


def _max_error(actual, expected) -> float:
    import torch

    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    if actual.shape != expected.shape:
        return float("inf")
    if actual.numel() == 0:
        return 0.0
    return (actual.double() - expected.double()).abs().max().item()


def check_lyric_tokenizer(runner: ParityRunner, case: dict, tensors: dict) -> Iterator[Check]:
    tokenizer = runner.pipeline.lyric_tokenizer
    for index, item in enumerate(case["items"]):
        yield f"item{index}", tokenizer.tokenize_lyrics(item["lyrics"]), item["token_ids"], EXACT


def check_text_encoder(runner: ParityRunner, case: dict, tensors: dict) -> Iterator[Check]:
    encoder = runner.pipeline.text_encoder
    ids, mask = encoder.tokenize(case["prompts"])
    yield "input_ids", ids, tensors["input_ids"], EXACT
    yield "attention_mask", mask, tensors["attention_mask"], EXACT
    states, _ = encoder.encode(case["prompts"])
    yield "last_hidden_state", states, tensors["last_hidden_state"], runner.tolerances.component
    null_states, _ = encoder.encode(case["prompts"], erg=True)
    yield "last_hidden_state_null_erg", null_states, tensors["last_hidden_state_null_erg"], runner.tolerances.component


def check_transformer_forward(runner: ParityRunner, case: dict, tensors: dict) -> Iterator[Check]:
    import torch

    model = runner.pipeline.transformer
    t = tensors
    lyrics = model.encode_lyrics(t["lyric_token_idx"], t["lyric_mask"])
    yield "lyric_encoder_out", lyrics, t["lyric_encoder_out"], runner.tolerances.component
    args = (t["encoder_text_hidden_states"], t["text_attention_mask"], t["speaker_embeds"], t["lyric_token_idx"], t["lyric_mask"])
    states, mask = model.encode(*args)
    yield "encode_hidden_states", states, t["encode_hidden_states"], runner.tolerances.component
    yield "encode_hidden_mask", mask, t["encode_hidden_mask"], EXACT
    frames = t["latent"].shape[-1]
    sample = model.decode(t["latent"], t["attention_mask"], states, mask, t["timestep"], frames)
    yield "sample", sample, t["sample"], runner.tolerances.component
    zeros_text, zeros_speaker = torch.zeros_like(args[0]), torch.zeros_like(args[2])
    null_states, _ = model.encode(zeros_text, args[1], zeros_speaker, args[3], args[4], erg_lyric=True)
    yield "encode_erg_null_lyric", null_states, t["encode_erg_null_lyric"], runner.tolerances.component
    erg_sample = model.decode(t["latent"], t["attention_mask"], null_states, mask, t["timestep"], frames, erg_diffusion=True)
    yield "sample_erg_diffusion", erg_sample, t["sample_erg_diffusion"], runner.tolerances.component


def check_dcae_vocoder(runner: ParityRunner, case: dict, tensors: dict) -> Iterator[Check]:
    from acestep_app.acestep_v1.models.autoencoder import LATENT_SCALE, LATENT_SHIFT

    autoencoder = runner.pipeline.autoencoder
    latent = tensors["latent"]
    raw = autoencoder.dcae.decoder(latent / LATENT_SCALE + LATENT_SHIFT)
    yield "dcae_decoder_out", raw, tensors["dcae_decoder_out"], runner.tolerances.component
    yield "wav_44100", autoencoder.decode(latent, sample_rate=44100)[0], tensors["wav_44100"], runner.tolerances.component
    yield "wav_48000", autoencoder.decode(latent, sample_rate=48000)[0], tensors["wav_48000"], runner.tolerances.component
    yield "vocoder_wav", autoencoder.vocoder.decode(tensors["vocoder_mel_in"]), tensors["vocoder_wav"], runner.tolerances.component


def load_case_audio(case_dir: Path, relative_path: str):
    """A case's clip as the reference read it: float32 (C, N), mono repeated to stereo, and its rate."""
    import soundfile
    import torch

    samples, sample_rate = soundfile.read(case_dir / relative_path, dtype="float32", always_2d=True)
    audio = torch.from_numpy(samples.T.copy())
    if audio.shape[0] == 1:
        audio = audio.repeat(2, 1)
    return audio, sample_rate


def check_dcae_encode(runner: ParityRunner, case: dict, tensors: dict) -> Iterator[Check]:
    autoencoder = runner.pipeline.autoencoder
    audio, sample_rate = load_case_audio(runner.case_dir, case["audio_file"])
    yield "audio_loaded", audio, tensors["audio_loaded"], EXACT
    padded = autoencoder.waveform_to_native(audio[None], sample_rate)
    yield "audio_44k_padded", padded, tensors["audio_44k_padded"], runner.tolerances.component
    mel = autoencoder.log_mel(tensors["audio_44k_padded"])
    yield "mel", mel, tensors["mel"], runner.tolerances.component
    normalised = autoencoder.normalise_log_mel(tensors["mel"])
    yield "mel_normalized", normalised, tensors["mel_normalized"], runner.tolerances.component
    raw = autoencoder.encode_mel(tensors["mel_normalized"])
    yield "dcae_encoder_out", raw, tensors["dcae_encoder_out"], runner.tolerances.component
    yield "latents", autoencoder.encode(audio[None], sample_rate), tensors["latents"], runner.tolerances.component


def check_scheduler(runner: ParityRunner, case: dict, tensors: dict) -> Iterator[Check]:
    from acestep_app.acestep_v1.sampling import FlowMatchSampler, flow_match_schedule

    for entry in case["entries"]:
        if "scheduler" in entry:
            name, steps = entry["scheduler"], entry["steps"]
            timesteps, sigmas = flow_match_schedule(name, steps)
            yield f"{name}_{steps}_timesteps", timesteps, tensors[f"{name}_{steps}_timesteps"], EXACT
            yield f"{name}_{steps}_sigmas", sigmas, tensors[f"{name}_{steps}_sigmas"], EXACT
            continue
        key = entry["step_case"]
        scheduler = key.split("_")[0]
        sampler = FlowMatchSampler(scheduler, entry["steps"], entry["omega"])
        sampler.skip_to(entry["step_index"])
        sample = sampler.step(tensors[f"{key}_model_output"], tensors[f"{key}_sample"])
        if scheduler == "euler":
            yield key, sample, tensors[f"{key}_prev_sample"], runner.tolerances.component
        else:
            yield f"{key}_predictor", sample, tensors[f"{key}_prev_sample_1"], runner.tolerances.component
            corrected = sampler.step(tensors[f"{key}_model_output_2"], sample)
            yield f"{key}_corrector", corrected, tensors[f"{key}_prev_sample_2"], runner.tolerances.component


# The reference __call__'s defaults for the editing arguments (editing spec §1.1).
EDIT_DEFAULTS = {
    "repaint_start": 0, "repaint_end": 0, "retake_variance": 0.5, "edit_n_min": 0.0, "edit_n_max": 1.0,
    "edit_n_avg": 1, "ref_audio_strength": 0.5,
}  # fmt: skip


def edit_task(runner: ParityRunner, case: dict, tensors: dict) -> tuple[object, list[Check]]:
    """The editing task of an e2e case (None for text2music) and the checks of its inputs."""
    from acestep_app.acestep_v1 import editing

    kw, task = {**EDIT_DEFAULTS, **case["call_kwargs"]}, case.get("task", "text2music")
    retake_seeds = case["pipeline_input_params"].get("retake_seeds")
    if task not in ("retake", "repaint", "extend", "edit", "audio2audio"):
        return None, []  # the reference runs any other task string as text2music
    if task == "retake" or (task in ("repaint", "extend") and not kw.get("src_audio_path")):
        return editing.Retake(kw["retake_variance"], retake_seeds), []  # without a source only a retake runs
    role = "ref" if task == "audio2audio" else "src"
    audio, sample_rate = load_case_audio(runner.case_dir, kw["ref_audio_input" if role == "ref" else "src_audio_path"])
    checks = [(f"{role}_audio_loaded", audio, tensors[f"{role}_audio_loaded"], EXACT)]
    if not runner.stored_source_latents:
        latents = runner.pipeline.encode_audio(audio, sample_rate)
        checks.append((f"{role}_latents", latents, tensors[f"{role}_latents"], runner.tolerances.component))
    if task == "audio2audio":
        return editing.AudioToAudio(audio, sample_rate, kw["ref_audio_strength"]), checks
    if task == "edit":
        edit = editing.FlowEdit(
            audio, sample_rate, kw["edit_target_prompt"], kw["edit_target_lyrics"],
            kw["edit_n_min"], kw["edit_n_max"], kw["edit_n_avg"], retake_seeds,
        )  # fmt: skip
        return edit, checks
    # repaint and extend: one reference code path; the frame numbers decide
    repaint = editing.Repaint(
        audio, sample_rate, kw["repaint_start"], kw["repaint_end"], kw["retake_variance"], retake_seeds
    )
    return repaint, checks


@contextmanager
def encoding_to(pipeline, latents):
    """``pipeline.encode_audio`` returns ``latents`` (the case's own, stored) inside the block."""
    pipeline.encode_audio = lambda waveform, sample_rate: latents
    try:
        yield
    finally:
        del pipeline.encode_audio  # the class's method again


def check_e2e(runner: ParityRunner, case: dict, tensors: dict) -> Iterator[Check]:
    import torch

    task, task_checks = edit_task(runner, case, tensors)
    yield from task_checks
    stored = next((tensors[name] for name in ("src_latents", "ref_latents") if name in tensors), None)
    if runner.stored_source_latents and stored is not None and task is not None:
        # As the reference's encoder returned them: channels-last, in the model dtype.
        pipeline = runner.pipeline
        latents = stored.to(pipeline.dtype).contiguous(memory_format=torch.channels_last)
        with encoding_to(pipeline, latents):
            yield from _check_e2e_run(runner, case, tensors, task)
    else:
        yield from _check_e2e_run(runner, case, tensors, task)


def _check_e2e_run(runner: ParityRunner, case: dict, tensors: dict, task) -> Iterator[Check]:
    pipeline = runner.pipeline
    kw = case["call_kwargs"]
    seeds = case["pipeline_input_params"]["actual_seeds"]
    frames = tensors["initial_noise"].shape[-1] if "initial_noise" in tensors else 0
    if "initial_noise" in tensors:
        yield "initial_noise", pipeline.initial_noise(seeds, frames), tensors["initial_noise"], EXACT
    retake_seeds = case["pipeline_input_params"].get("retake_seeds")
    runner.use_lora(case.get("lora"))
    if "retake_noise" in tensors:
        yield "retake_noise", pipeline.initial_noise(retake_seeds, frames), tensors["retake_noise"], EXACT
    ids, mask = pipeline.lyric_tokenizer.ids_and_mask([kw["lyrics"]])
    yield "lyric_token_ids", ids[0], tensors["lyric_token_ids"][0], EXACT
    states, _ = pipeline.text_encoder.encode([kw["prompt"]])
    yield "encoder_text_hidden_states", states[0], tensors["encoder_text_hidden_states"][0], runner.tolerances.component
    if "encoder_text_hidden_states_null" in tensors and kw.get("use_erg_tag", True):
        null_states, _ = pipeline.text_encoder.encode([kw["prompt"]], erg=True)
        expected = tensors["encoder_text_hidden_states_null"][0]
        yield "encoder_text_hidden_states_null", null_states[0], expected, runner.tolerances.component
    trajectory = {}  # loop index -> latents after that step (text2music and retake: our index is the reference's)
    record = None if task is not None and type(task).__name__ != "Retake" else trajectory.__setitem__
    output = pipeline(
        kw["prompt"],
        kw["lyrics"],
        duration=kw["audio_duration"],
        num_inference_steps=kw["infer_step"],
        seed=seeds,
        batch_size=kw["batch_size"],
        scheduler=kw["scheduler_type"],
        guidance_type=kw["cfg_type"],
        granularity_scale=kw["omega_scale"],
        guidance_interval=kw["guidance_interval"],
        guidance_interval_decay=kw["guidance_interval_decay"],
        guidance_scale=kw["guidance_scale"],
        minimum_guidance_scale=kw["min_guidance_scale"],
        tag_guidance_scale=kw["guidance_scale_text"],
        lyric_guidance_scale=kw["guidance_scale_lyric"],
        use_erg_tag=kw["use_erg_tag"],
        use_erg_lyric=kw["use_erg_lyric"],
        use_erg_diffusion=kw["use_erg_diffusion"],
        batched_guidance=runner.batched_guidance,
        decode="waveform_0" in tensors,
        task=task,
        latents_callback=None if record is None else lambda index, latents: record(index, latents.clone()),
    )
    for index, latents in sorted(trajectory.items()):
        if f"latents_after_step{index:03d}" in tensors:
            expected = tensors[f"latents_after_step{index:03d}"]
            yield f"latents_after_step{index:03d}", latents, expected, runner.tolerances.latents
    yield "final_latents", output.latents, tensors["final_latents"], runner.tolerances.latents
    if "waveform_0" in tensors:
        yield "waveform_0", output.waveforms[0], tensors["waveform_0"], runner.tolerances.waveform


KINDS: dict[str, Callable[[ParityRunner, dict, dict], Iterator[Check]]] = {
    "lyric_tokenizer": check_lyric_tokenizer,
    "text_encoder": check_text_encoder,
    "transformer_forward": check_transformer_forward,
    "dcae_vocoder": check_dcae_vocoder,
    "scheduler": check_scheduler,
    "e2e": check_e2e,
    "dcae_encode": check_dcae_encode,
}


def case_files(cases_dir: Path) -> list[Path]:
    return sorted(path for path in cases_dir.glob("*.json") if path.is_file())


def default_checkpoint(cases_dir: Path) -> Path:
    """``CASES_DIR/../checkpoint``; else that of a sibling fixture set whose name ours extends.

    The editing fixtures (``acestep-v1-tiny-edit``) reuse the checkpoint of ``acestep-v1-tiny``.
    """
    fixture = cases_dir.resolve().parent
    own = fixture / "checkpoint"
    if own.is_dir():
        return own
    siblings = sorted(fixture.parent.iterdir(), key=lambda path: -len(path.name)) if fixture.parent.is_dir() else []
    for sibling in siblings:
        if sibling != fixture and fixture.name.startswith(sibling.name) and (sibling / "checkpoint").is_dir():
            return sibling / "checkpoint"
    return own


def run_cases(args: argparse.Namespace) -> int:
    """Run every case of ``args.cases_dir``; one line per case, then ``N passed, M failed``."""
    cases_dir: Path = args.cases_dir
    files = [path for path in case_files(cases_dir) if not args.only or args.only in path.stem]
    if not files:
        print(f"no cases in {cases_dir}")
        return 1
    checkpoint = args.checkpoint or default_checkpoint(cases_dir)
    try:
        runner = ParityRunner(
            checkpoint, args.lyric_vocab, batched_guidance=args.batched, stored_source_latents=args.stored_source_latents
        )
    except WeightsError as error:
        print(f"error: {error}")
        return 1
    results = []
    for path in files:
        results.append(runner.run(path))
        print(results[-1].line(), flush=True)
    passed = sum(result.passed for result in results)
    if any(not result.passed and result.dtype == "bfloat16" for result in results) and intel_cpu():
        print(INTEL_FFT_NOTE)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1
