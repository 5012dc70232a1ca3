"""A controllable stand-in for ``acestep_app.acestep_v1.engine.Engine`` (same ``generate`` contract, real ``Generation``).

Server and queue tests use it to hold a job mid-run, inject failures and delays, and run hundreds of
jobs quickly; end-to-end tests use the real Engine on the tiny checkpoint instead.
Also runnable as a server: ``python tests/engine_double.py --data-dir D --port P [--step-delay S]``
(the restart tests kill -9 it while a job is held in a slow step).
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from acestep_app.engine.generation import Generation, Progress


class EngineDouble:
    """Generates silence; ``steps`` progress callbacks, ``step_delay`` seconds apart.

    ``hold``: when set to an Event, every step waits for it (tests release it to let jobs run).
    ``fail_with``: an exception raised after the first step. ``started`` is set when a job begins.
    """

    family = "acestep-v1"  # serves the v1 endpoints

    def __init__(self, steps: int = 3, step_delay: float = 0.0, sample_rate: int = 8000):
        self.steps = steps
        self.step_delay = step_delay
        self.sample_rate = sample_rate
        self.hold: threading.Event | None = None
        self.fail_with: BaseException | None = None
        self.started = threading.Event()
        self.calls: list[object] = []
        self.sources: list[object] = []  # the decoded songs edit() got

    def generate(self, request, on_progress=None) -> Generation:
        return self.silence(request, request.duration, on_progress)

    def edit(self, request, source, on_progress=None) -> Generation:
        """The editing contract: the source's length, plus outpaint's extensions."""
        extensions = getattr(request, "extend_before_duration", 0.0) + getattr(request, "extend_after_duration", 0.0)
        self.sources.append(source)
        return self.silence(request, source.duration + extensions, on_progress)

    def silence(self, request, duration: float, on_progress=None) -> Generation:
        self.calls.append(request)
        self.started.set()
        for step in range(1, self.steps + 1):
            if self.hold is not None:
                self.hold.wait(30)
            time.sleep(self.step_delay)
            if on_progress is not None:
                on_progress(Progress(step, self.steps, f"denoising step {step}/{self.steps}"))
            if self.fail_with is not None:
                raise self.fail_with
        samples = int(round(duration * self.sample_rate))
        tags = getattr(request, "tags", None) or "double, silence"
        lyrics = getattr(request, "lyrics", None) or "[inst]"
        return Generation(
            waveform=np.zeros((2, samples), dtype=np.float32),
            sample_rate=self.sample_rate,
            seed=request.seed if request.seed is not None else 1234,
            tags=tags,
            lyrics=lyrics,
            billable_seconds=samples / self.sample_rate,
            num_forwards=self.steps,
            logs=["engine double: silent audio"],
        )

    def describe(self) -> dict:
        return {"is_tiny": True, "engine": "double"}


def main() -> None:
    from acestep_app.cli.serve import allow_private_urls, serve_app
    from acestep_app.hosts.local import create_app
    from acestep_app.settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--ssl-certfile", default=None)
    parser.add_argument("--ssl-keyfile", default=None)
    parser.add_argument("--allow-private-urls", action="store_true")
    args = parser.parse_args()
    engine = EngineDouble(steps=args.steps, step_delay=args.step_delay)
    settings = allow_private_urls(Settings.load(), args.allow_private_urls)
    app = create_app(engine, settings, args.data_dir, api_key=args.api_key)
    serve_app(app, "127.0.0.1", args.port, args.ssl_certfile, args.ssl_keyfile)


if __name__ == "__main__":
    main()
