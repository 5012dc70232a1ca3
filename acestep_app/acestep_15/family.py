"""ACE-Step 1.5 (January 2026; XL since April 2026) as a model family: fal's ``fal-ai/ace-step-1.5`` endpoints
on diffusers' ``AceStepPipeline``."""

from acestep_app.engine.family import ModelFamily

from .endpoints import ENDPOINTS, configured_endpoints
from .settings import FAMILY_NAME, AceStep15Settings, price_per_second, weight_entries, weights_available

FAMILY = ModelFamily(
    name=FAMILY_NAME,
    app_name="ace-step-1.5",
    title="ACE-Step 1.5 text-to-music, repaint and cover; API-compatible with fal-ai/ace-step-1.5.",
    endpoints=ENDPOINTS,
    engine="acestep_app.acestep_15.engine:AceStep15Engine",
    make_tiny="acestep_app.acestep_15.tiny:write_tiny_checkpoint",
    weight_entries=weight_entries,
    weights_available=weights_available,
    settings_model=AceStep15Settings,
    price_per_second=price_per_second,
    endpoints_for=configured_endpoints,
)
