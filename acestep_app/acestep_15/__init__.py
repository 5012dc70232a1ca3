"""ACE-Step 1.5: diffusers' AceStepPipeline for the DiT half and our 5 Hz LM planner (``planner/``)."""
