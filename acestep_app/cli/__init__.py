"""The ``acestep-app`` command line.

Each subcommand lives in its own module exposing ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; modules import torch and friends inside ``run`` so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "generate": "acestep_app.cli.generate",
    "edit": "acestep_app.cli.edit",
    "inpaint": "acestep_app.cli.inpaint",
    "outpaint": "acestep_app.cli.outpaint",
    "serve": "acestep_app.cli.serve",
    "weights": "acestep_app.cli.weights",
    "usage": "acestep_app.cli.usage",
    "prune": "acestep_app.cli.prune",
    "parity": "acestep_app.devtools.parity.command",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acestep-app", description="ACE-Step v1 text-to-music, served.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from acestep_app.errors import WeightsError
    from acestep_app.settings import SettingsError

    try:
        return int(args._run(args) or 0)
    except (WeightsError, SettingsError) as error:  # the user's setup, not a bug: the message, no traceback
        logging.getLogger("acestep_app").error("%s", error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
