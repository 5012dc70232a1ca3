"""acestep-app: publish ACE-Step text-to-music endpoints with fal's API on fal, on Modal, or locally.

The layout is described in docs/architecture.md: ``serving/`` (fal's protocol), ``hosts/`` (the
local server, fal and Modal glue), ``engine/`` (the family-agnostic engine interface), one folder per
model family (``acestep_v1/``), and the shared parts (``songwriter/``, ``quality/``, ``audio/``,
``weights/``, ``devtools/``, ``cli/``).
"""
