"""``acestep-app prune``: the server's retention pruning, on demand (see :mod:`acestep_app.serving.retention`)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("delete finished jobs, their audio and input files, and ended webhook deliveries older than "
        "[storage].retention_days (usage rows, the billing ledger, are kept)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="the local server's data dir (default ./data)")
    parser.add_argument("--days", type=float, default=None,
                        help="prune what finished more than this many days ago (default [storage].retention_days; "
                             "0 = everything finished)")


def run(args: argparse.Namespace) -> int:
    from acestep_app.serving.retention import folder_size, prune_data_dir
    from acestep_app.serving.stores.sqlite import DATABASE_NAME
    from acestep_app.settings import Settings

    if args.days is not None and args.days < 0:
        print("--days must be 0 or more")
        return 2
    if not (args.data_dir / DATABASE_NAME).exists():
        print(f"nothing to prune: {args.data_dir / DATABASE_NAME} does not exist")
        return 1
    before = folder_size(args.data_dir)
    report = prune_data_dir(args.data_dir, Settings.load(), args.days)
    print(f"{report}; data dir {before} -> {folder_size(args.data_dir)} bytes")
    return 0
