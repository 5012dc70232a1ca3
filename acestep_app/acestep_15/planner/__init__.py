"""The ACE-Step 1.5 planner: the 5 Hz language model that writes the metadata chain of thought and
the semantic audio codes the DiT renders (docs/acestep-15-planner.md).

* ``Planner`` (``planner.py``): loads the LM; ``plan(PlanRequest)`` -> ``Plan`` (the DiT's
  conditions and codes); ``inspire`` / ``format`` / ``understand``, the official helper modes.
* ``prompts.py``: the chat messages of every mode, the chain of thought as YAML, generation lengths.
* ``constraints.py``: constrained decoding (field order, value sets, caption and code rules).
* ``sampling.py``: guidance and sampling in the official order, as a transformers logits processor.
* ``parsing.py``: metadata, codes and lyrics from the LM's text.
* ``values.py``: the value sets and constants; ``tiny.py``: a tiny random LM for tests and demos.

Importing this package does not import torch or transformers.
"""

from .planner import Plan, Planner, PlanRequest, SamplingConfig, Sketch
from .tiny import write_tiny_planner_lm

__all__ = ["Plan", "PlanRequest", "Planner", "SamplingConfig", "Sketch", "write_tiny_planner_lm"]
