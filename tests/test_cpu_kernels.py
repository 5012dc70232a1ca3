"""[engine] cpu_bf16_kernels: the reference's oneDNN / MKL kernels for bfloat16 on CPU, or the CPU's fastest."""

import pytest

from acestep_app.engine import cpu_kernels
from acestep_app.settings import Settings


def test_pinning_sets_the_reference_caps_and_keeps_the_users(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    in_effect = cpu_kernels.pin_reference_cpu_kernels()
    assert in_effect == {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def test_the_test_process_runs_correct_bf16_convolutions():
    """conftest pinned the caps before any kernel ran, so the patch-embedding check passes here."""
    assert cpu_kernels.patch_embedding_conv_error() <= cpu_kernels.CONV_CHECK_TOLERANCE
    assert cpu_kernels.use_reference_cpu_kernels()


def test_intel_cpu_reads_the_vendor(tmp_path):
    intel, amd = tmp_path / "intel", tmp_path / "amd"
    intel.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n")
    amd.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n")
    assert cpu_kernels.intel_cpu(intel) and not cpu_kernels.intel_cpu(amd)
    assert not cpu_kernels.intel_cpu(tmp_path / "missing")


@pytest.mark.parametrize(("kernels", "conv_impl"), [("reference", "conv"), ("native", "gemm")])
def test_engine_in_bf16_on_cpu_runs_the_chosen_convolutions(tiny_weights, kernels, conv_impl):
    from acestep_app.acestep_v1.engine import Engine

    base = Settings()
    engine_settings = base.engine.model_copy(
        update={"device": "cpu", "dtype": "bfloat16", "cpu_bf16_kernels": kernels, "prompt_backend": "fallback"}
    )
    engine = Engine.load(base.model_copy(update={"engine": engine_settings}), weights_dir=tiny_weights)
    assert engine.pipeline.transformer.conv_impl == conv_impl


def test_float32_keeps_the_gemm_convolutions(tiny_engine):
    assert tiny_engine.pipeline.transformer.conv_impl == "gemm"


def test_cpu_bf16_kernels_is_validated():
    with pytest.raises(ValueError, match="cpu_bf16_kernels"):
        Settings.model_validate({"engine": {"cpu_bf16_kernels": "fastest"}})
