"""``acestep-app usage``: billed totals from a usage ledger (the local server's, or the Modal app's)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "print usage totals (jobs, seconds of audio, USD) per endpoint from a server's data dir or a usage dir"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-dir", type=Path, default=None, help="the local server's data dir (default ./data)")
    source.add_argument("--usage-dir", type=Path, default=None,
                        help="a folder of usage records, one <request id>.json each: the Modal app's ledger "
                             "(`modal volume get <[modal].files_volume> usage ./usage`, or the Volume mounted)")


def run(args: argparse.Namespace) -> int:
    from acestep_app.serving.jobs import read_usage_dir, usage_totals
    from acestep_app.serving.stores.sqlite import DATABASE_NAME, SqliteJobStore

    if args.usage_dir is not None:
        if not args.usage_dir.is_dir():
            print(f"no usage recorded: {args.usage_dir} is not a folder")
            return 1
        records = read_usage_dir(args.usage_dir)
    else:
        data_dir = args.data_dir or Path("data")
        if not (data_dir / DATABASE_NAME).exists():
            print(f"no usage recorded: {data_dir / DATABASE_NAME} does not exist")
            return 1
        store = SqliteJobStore(data_dir)
        try:
            records = store.usage_records()
        finally:
            store.close()
    print(f"{'endpoint':<20} {'jobs':>6} {'completed':>9} {'seconds':>12} {'usd':>12}")
    for endpoint, total in usage_totals(records).items():
        print(f"{endpoint:<20} {total.jobs:>6} {total.completed:>9} {total.seconds:>12.3f} {total.price_usd:>12.6f}")
    return 0
