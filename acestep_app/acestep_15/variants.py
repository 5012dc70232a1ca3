"""The ACE-Step 1.5 DiT variants a deployment can load, and the request defaults each one implies.

``[models."acestep-1.5"].variant`` in infra.toml picks one; the endpoints' schema defaults
(``num_inference_steps``, ``shift``) follow it, so a client that sends only a prompt gets what the
variant was trained for (facts §1 "Variants"):

=============  ======================  =====  ==========  =====  ===========================
variant        official DiT folder      steps  guidance    shift  notes
=============  ======================  =====  ==========  =====  ===========================
turbo          acestep-v15-turbo        8      distilled   3.0    the default; in Ace-Step1.5
turbo-shift1   acestep-v15-turbo-shift1 8      distilled   1.0
turbo-shift3   acestep-v15-turbo-shift3 8      distilled   3.0
sft            acestep-v15-sft          50     APG 7.0     3.0
base           acestep-v15-base         50     APG 7.0     3.0    extract / lego / complete
xl-turbo       acestep-v15-xl-turbo     8      distilled   3.0    4B DiT (hidden 2560)
=============  ======================  =====  ==========  =====  ===========================

Guidance: diffusers' pipeline ignores ``guidance_scale`` on turbo checkpoints (``is_turbo``) and runs
APG above 1.0 on the others; its default, 7.0, is every variant's default here too.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_VARIANT = "turbo"
DEFAULT_GUIDANCE_SCALE = 7.0  # diffusers' default; turbo checkpoints ignore it


@dataclass(frozen=True)
class Variant:
    name: str
    dit_folder: str  # the DiT folder of the official layout (under the weights dir)
    weight_entry: str  # the weights/manifest.toml entry holding that folder
    num_inference_steps: int
    shift: float
    guided: bool  # False: guidance distilled into the weights (turbo)
    description: str

    @property
    def guidance_scale(self) -> float:
        return DEFAULT_GUIDANCE_SCALE


VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant("turbo", "acestep-v15-turbo", "acestep15", 8, 3.0, False,
                "turbo DiT (guidance distilled; trained on shifts 1, 2 and 3): 8 steps, shift 3"),
        Variant("turbo-shift1", "acestep-v15-turbo-shift1", "acestep15_turbo_shift1", 8, 1.0, False,
                "turbo DiT distilled at shift 1: 8 steps"),
        Variant("turbo-shift3", "acestep-v15-turbo-shift3", "acestep15_turbo_shift3", 8, 3.0, False,
                "turbo DiT distilled at shift 3: 8 steps"),
        Variant("sft", "acestep-v15-sft", "acestep15_sft", 50, 3.0, True,
                "supervised fine-tuned DiT: 50 steps with APG guidance 7"),
        Variant("base", "acestep-v15-base", "acestep15_base", 50, 3.0, True,
                "base DiT: 50 steps with APG guidance 7 (also extract, lego and complete)"),
        Variant("xl-turbo", "acestep-v15-xl-turbo", "acestep15_xl_turbo", 8, 3.0, False,
                "XL turbo DiT (4B parameters): 8 steps, shift 3"),
    )
}


def variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown ACE-Step 1.5 variant {name!r}; one of {', '.join(VARIANTS)}") from None
