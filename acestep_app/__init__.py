"""acestep-app: a deployable ACE-Step v1 text-to-music endpoint."""

__version__ = "0.1.0"
