"""``acestep-app usage``: billed totals from the local server's usage table."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "print usage totals (jobs, seconds of audio, USD) per endpoint from a server's data dir"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="the server's data dir (default ./data)")


def run(args: argparse.Namespace) -> int:
    from acestep_app.jobs import DATABASE_NAME, JobStore

    if not (args.data_dir / DATABASE_NAME).exists():
        print(f"no usage recorded: {args.data_dir / DATABASE_NAME} does not exist")
        return 1
    store = JobStore(args.data_dir)
    try:
        totals = store.usage_totals()
    finally:
        store.close()
    print(f"{'endpoint':<20} {'jobs':>6} {'completed':>9} {'seconds':>12} {'usd':>12}")
    for endpoint, total in totals.items():
        print(f"{endpoint:<20} {total.jobs:>6} {total.completed:>9} {total.seconds:>12.3f} {total.price_usd:>12.6f}")
    return 0
