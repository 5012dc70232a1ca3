"""ACE-Step v1 (3.5B, May 2025) as a model family: fal's ``fal-ai/ace-step`` endpoints on our clean-room models."""

from acestep_app.acestep_v1.endpoints import ENDPOINTS
from acestep_app.acestep_v1.engine import needed_weight_entries, real_weights_available
from acestep_app.engine.family import ModelFamily

FAMILY = ModelFamily(
    name="acestep-v1",
    app_name="ace-step",
    title="ACE-Step v1 text-to-music; API-compatible with fal-ai/ace-step and its sub-endpoints.",
    endpoints=ENDPOINTS,
    engine="acestep_app.acestep_v1.engine:Engine",
    make_tiny="acestep_app.acestep_v1.tiny:write_tiny_checkpoint",
    weight_entries=needed_weight_entries,
    weights_available=real_weights_available,
)
