"""The demo ``generate`` on a host whose CPUs are already busy: torch's default threads vs the engine's choice.

Starts one CPU burner (a Python busy loop, no I/O) per allowed CPU and runs the newcomer's first
command twice, one run after the other: once with torch's default thread count (one per CPU, as
before the engine chose threads), once with the engine's automatic choice (``[engine].threads = 0``).
It kills the burners afterwards. ``OMP_NUM_THREADS`` is removed from the runs' environment, since
it would override both.

    .venv/bin/python bench/busy_host.py
    .venv/bin/python bench/busy_host.py --before-pythonpath /path/to/older/checkout   # before = that code
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ["generate", "upbeat synthwave about night drives", "--duration", "10"]
BURNER = "while True: pass"


def run(command: list[str], pythonpath: Path) -> float:
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    environment["PYTHONPATH"] = str(pythonpath)
    started = time.perf_counter()
    subprocess.run(command, env=environment, check=True, capture_output=True, cwd=pythonpath)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burners", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--before-pythonpath", type=Path,
                        help="run 'before' from this checkout with its defaults (else this one with --threads N)")
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    output = Path(tempfile.mkdtemp()) / "x.wav"
    cli = [sys.executable, "-m", "acestep_app.cli", *DEMO, "-o", str(output)]
    if args.before_pythonpath:
        before = (cli, args.before_pythonpath.resolve(), f"{args.before_pythonpath} (torch default threads)")
    else:
        before = (cli + ["--threads", str(cpus)], ROOT, f"--threads {cpus} (torch's default: one per CPU)")
    after = (cli, ROOT, "automatic threads ([engine].threads = 0)")
    run(after[0], ROOT)  # writes the tiny demo checkpoint once, outside the timings
    burners = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(args.burners)]
    try:
        time.sleep(1.0)
        timings = [(label, run(command, path)) for command, path, label in (before, after)]
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    print(f"reproduce: .venv/bin/python bench/busy_host.py {shlex.join(sys.argv[1:])}".rstrip())
    print(f"{cpus} CPUs allowed, {args.burners} busy-loop burners; command: acestep-app {shlex.join(DEMO)} -o x.wav")
    for label, seconds in timings:
        print(f"  {label}: {seconds:.2f} s")
    print(f"  speed-up {timings[0][1] / timings[1][1]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
