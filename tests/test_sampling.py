"""Sampling maths against the spec's worked numbers (spec §6, §9.2) and the reference's quirks."""

import math

import pytest
import torch

from acestep_app.acestep_v1.sampling import (
    COND,
    NULL,
    TEXT_ONLY,
    FlowMatchSampler,
    GuidanceConfig,
    Guider,
    cfg_zero_star,
    count_forwards,
    denoise,
    flow_match_schedule,
    omega_factor,
    rescale_update,
)


@pytest.mark.parametrize(
    "omega, gain", [(10, 1.0462117), (0, 1.0), (1, 1.0049958), (100, 1.0999909), (-100, 0.9000091)]
)
def test_omega_factor_worked_numbers(omega, gain):
    # the worked numbers are given to 7 decimals (float64 maths underneath)
    assert omega_factor(omega) == pytest.approx(gain, abs=1e-7)


def test_euler_schedule_worked_numbers():
    _, sigmas = flow_match_schedule("euler", 27)  # worked numbers to 6 decimals; float32 sigmas (ulp <= 6e-8)
    assert sigmas[:4].tolist() == pytest.approx([1.0, 0.986882, 0.973058, 0.958468], abs=1e-6)
    assert sigmas[24:].tolist() == pytest.approx([0.206198, 0.114550, 0.008929, 0.0], abs=1e-6)
    _, sigmas = flow_match_schedule("euler", 60)
    assert sigmas[:4].tolist() == pytest.approx([1.0, 0.994303, 0.988475, 0.982510], abs=1e-6)


def test_heun_schedule_repeats_inner_timesteps():
    timesteps, sigmas = flow_match_schedule("heun", 4)
    euler_timesteps, euler_sigmas = flow_match_schedule("euler", 4)
    assert len(timesteps) == 7 and len(sigmas) == 8
    assert timesteps[1] == timesteps[2] == euler_timesteps[1]
    assert sigmas[-1] == 0 and sigmas[-2] == euler_sigmas[-2]


@pytest.mark.parametrize("steps, window", [(27, range(6, 20)), (60, range(15, 45)), (10, range(2, 7))])
def test_guidance_window(steps, window):
    assert GuidanceConfig(guidance_interval=0.5).window(steps) == window


def test_guidance_window_edges():
    assert GuidanceConfig(guidance_interval=1.0).window(27) == range(0, 27)
    assert len(GuidanceConfig(guidance_interval=0.0).window(27)) == 0
    for scale in (0.0, 1.0):
        assert len(GuidanceConfig(guidance_scale=scale, guidance_interval=1.0).window(27)) == 0


def test_forward_counts_at_fal_defaults():
    defaults = GuidanceConfig()
    assert defaults.double_condition
    assert count_forwards("euler", 27, defaults, batched=False) == 55
    assert count_forwards("euler", 27, defaults, batched=True) == 27
    single = GuidanceConfig(tag_guidance_scale=0.0, lyric_guidance_scale=0.0)
    assert count_forwards("euler", 27, single, batched=False) == 41
    assert count_forwards("heun", 10, single, batched=False) == 19 + 5


def test_decay_is_linear_toward_the_minimum_and_guarded():
    config = GuidanceConfig(guidance_scale=15, minimum_guidance_scale=3, guidance_interval=1.0, guidance_interval_decay=0.5)
    window = config.window(10)
    assert config.scale_at(0, window) == 15
    assert config.scale_at(9, window) == pytest.approx(15 - 12 * 0.5)  # float64 interpolation: approx's 1e-6
    one_step = range(4, 5)
    assert config.scale_at(4, one_step) == 15  # the reference would divide by zero here


def test_double_condition_combination():
    config = GuidanceConfig(tag_guidance_scale=5.0, lyric_guidance_scale=1.5, guidance_type="cfg")
    cond, text, null = (torch.full((1, 8, 16, 4), value) for value in (1.0, 2.0, 3.0))
    combined = Guider(config).combine(0, range(0, 1), {COND: cond, TEXT_ONLY: text, NULL: null})
    # constants 1, 2, 3 combined with weights exact in binary: allclose's defaults only absorb rounding
    assert torch.allclose(combined, -4 * null + 3.5 * text + 1.5 * cond)


def test_cfg_and_cfg_star():
    torch.manual_seed(0)
    cond, null = torch.randn(2, 8, 16, 4), torch.randn(2, 8, 16, 4)
    cfg = Guider(GuidanceConfig(guidance_type="cfg", tag_guidance_scale=0, guidance_scale=7)).combine(3, range(9), {COND: cond, NULL: null})
    assert torch.allclose(cfg, null + 7 * (cond - null))  # the same three float32 operations: rtol 1e-5 is ~100 eps
    assert torch.equal(cfg_zero_star(cond, null, 7.0, 1), torch.zeros_like(cond))
    star = cfg_zero_star(cond, null, 7.0, 2)
    alpha = (cond * null).sum(dim=(1, 2, 3)) / (null.pow(2).sum(dim=(1, 2, 3)) + 1e-8)
    expected = alpha.view(2, 1, 1, 1) * null + 7 * (cond - alpha.view(2, 1, 1, 1) * null)
    # alpha is the same 512-term float32 dot product on both sides; the rest is a few float32 operations
    # on values up to ~30, whose rounding rtol 1e-5 (~100 eps) covers (measured 0)
    assert torch.allclose(star, expected, atol=1e-6)


def test_apg_is_orthogonal_to_the_conditional_prediction_and_has_momentum():
    torch.manual_seed(1)
    config = GuidanceConfig(guidance_type="apg", tag_guidance_scale=0, guidance_scale=15)
    guider = Guider(config)
    cond, null = torch.randn(1, 8, 16, 6), torch.randn(1, 8, 16, 6)
    first = guider.combine(0, range(9), {COND: cond, NULL: null})
    update = (first - cond) / 14
    # orthogonal per (batch, channel): a 96-term float32 dot product of values ~3 rounds to eps 1.2e-7 x 96 x 3
    assert (update * cond).sum(dim=(-1, -2)).abs().max() < 1e-4
    assert update.norm(dim=(-1, -2)).max() <= 2.5 + 1e-5  # clipped to the norm threshold
    small = {COND: cond, NULL: cond - 0.01 * (cond - null)}  # below the clipping threshold
    fresh, carried = Guider(config), Guider(config)
    fresh_update = fresh.combine(0, range(9), small) - cond
    carried.combine(0, range(9), small)
    carried_update = carried.combine(1, range(9), small) - cond
    # d + (-0.75) * d: float32 rounding of updates ~0.1 (eps 1.2e-7 x 0.1 x a few operations) < 1e-6
    assert torch.allclose(carried_update, 0.25 * fresh_update, atol=1e-6)


def test_rescale_update_keeps_the_mean():
    update = torch.randn(2, 8, 16, 5, generator=torch.Generator().manual_seed(2))
    rescaled = rescale_update(update, 1.1)
    # a 1,280-value float32 mean of values ~3: eps 1.2e-7 x 3 x a few roundings < 1e-6 (measured 1.2e-7)
    assert rescaled.mean().item() == pytest.approx(update.mean().item(), abs=1e-6)
    assert torch.allclose(rescaled - rescaled.mean(), (update - update.mean()) * 1.1, atol=1e-6)


def test_heun_resume_must_be_at_a_predictor():
    sampler = FlowMatchSampler("heun", 5, 0.0)
    with pytest.raises(ValueError):
        sampler.skip_to(3)


def test_denoise_runs_each_step_with_the_requested_branches():
    calls = []

    def velocity(latents, timestep, branches):
        calls.append(tuple(branches))
        return {name: torch.zeros_like(latents) for name in branches}

    config = GuidanceConfig()
    steps = []
    denoise(velocity, torch.ones(1, 8, 16, 3), FlowMatchSampler("euler", 10, 10.0), config,
            callback=lambda index, total, latents: steps.append((index, total)))
    assert calls[:2] == [(COND,), (COND,)]
    assert calls[2] == (COND, TEXT_ONLY, NULL)
    assert sum(len(branches) for branches in calls) == count_forwards("euler", 10, config, batched=False)
    assert steps[-1] == (9, 10)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError):
        FlowMatchSampler("pingpong", 10, 0.0)
    with pytest.raises(ValueError):
        GuidanceConfig(guidance_type="pag")
    assert math.isfinite(omega_factor(-1000))
