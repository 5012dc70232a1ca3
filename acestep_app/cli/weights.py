"""``acestep-app weights pull|verify|make-tiny``: fetch, check or fake the checkpoint."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "download (pull), check (verify) or write a tiny random (make-tiny) checkpoint"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)

    pull = actions.add_parser("pull", help="download the pinned weights and check their digests")
    pull.add_argument("--dir", type=Path, default=None, help="weights folder (default: infra.toml's cache)")
    pull.add_argument("--quiet", action="store_true", help="no progress bars")
    pull.add_argument("--only", action="append", default=None, metavar="ENTRY", help="manifest entry (repeatable)")
    pull.add_argument("--lora", action="append", default=None, metavar="NAME",
                      help="also pull this pinned LoRA adapter, e.g. rapmachine (repeatable; see docs/lora.md)")

    verify = actions.add_parser(
        "verify", help="rehash the weights and name every missing or bad file (offline; Hub-pinned files are "
        "compared with the digest recorded when pull verified them)"
    )
    verify.add_argument("--dir", type=Path, default=None, help="weights folder (default: infra.toml's cache)")
    verify.add_argument("--quick", action="store_true", help="trust files verified before and unchanged since")
    verify.add_argument("--only", action="append", default=None, metavar="ENTRY", help="manifest entry (repeatable)")
    verify.add_argument("--lora", action="append", default=None, metavar="NAME", help="also verify this pinned LoRA")

    tiny = actions.add_parser("make-tiny", help="write a tiny random checkpoint in the official layout (noise audio)")
    tiny.add_argument("dir", type=Path, help="folder to write")
    tiny.add_argument("--family", default=None, help="model family (default: the primary one of infra.toml)")


def run(args: argparse.Namespace) -> int:
    if args.action == "make-tiny":
        return _make_tiny(args)

    from acestep_app.engine.family import served_families
    from acestep_app.errors import WeightsError
    from acestep_app.settings import Settings, SettingsError
    from acestep_app.weights import store as weights

    try:
        manifest = weights.Manifest.load()
        settings = Settings.load()
        if args.dir is None:
            weights.check_pin(settings, manifest)
            folder = weights.weights_cache_dir(settings)
        else:
            folder = args.dir
        # by default what the served families need under infra.toml (e.g. the prompt LLM, the ASR model for takes > 1)
        needed = {entry for family in served_families(settings) for entry in family.weight_entries(settings)}
        only = args.only or [name for name in manifest.names() if name in needed]
        only = [*only, *_lora_entries(manifest, args.lora or [])]
        if args.action == "pull":
            weights.pull(folder, progress=not args.quiet, only=only, manifest=manifest)
            print(f"weights ready in {folder}")
        else:
            weights.verify(folder, manifest, only=only, quick=args.quick, progress=True)
            print(f"weights in {folder} match the manifest ({_describe(manifest.files(only))})")
    except (WeightsError, SettingsError) as error:
        logger.error("%s", error)
        return 1
    return 0


def _lora_entries(manifest, names: list[str]) -> list[str]:
    from acestep_app.errors import WeightsError

    unknown = sorted(set(names) - set(manifest.lora_names()))
    if unknown:
        raise WeightsError(f"unknown LoRA {unknown}; pinned adapters: {manifest.lora_names()}")
    return names


def _describe(files: list) -> str:
    from_hub = sum(1 for f in files if f.hub_pin is not None)
    if not from_hub:
        return f"{len(files)} files"
    # verify never asks the network: these files are compared with what pull verified against the Hub
    return f"{len(files)} files; {from_hub} checked against digests recorded from the Hub when pulled"


def _make_tiny(args: argparse.Namespace) -> int:
    from acestep_app.engine.family import get_family, served_families
    from acestep_app.settings import Settings, SettingsError

    try:
        family = get_family(args.family) if args.family else served_families(Settings.load())[0]
    except SettingsError as error:
        logger.error("%s", error)
        return 1
    path = family.write_tiny(args.dir)
    print(f"tiny random {family.name} checkpoint written to {path} (its audio is noise; for tests and local runs)")
    return 0
