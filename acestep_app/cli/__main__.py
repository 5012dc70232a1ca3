"""``python -m acestep_app.cli``: the same as the ``acestep-app`` command."""

from acestep_app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
