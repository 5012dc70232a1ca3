"""Prometheus metrics of one served app, in a registry of its own (never prometheus-client's global one).

Every name starts ``acestep_``. Jobs are counted when they end, by whichever process ends them
(:meth:`Metrics.job_finished` is a queue ``on_finished`` hook); the queue depth and GPU memory are
read when scraped. Two apps in one process (tests, or a host serving two deployments) never share
a series.

====================================================  =========  ===========================================
metric                                                type       labels
====================================================  =========  ===========================================
``acestep_requests_submitted_total``                  counter    endpoint
``acestep_requests_total``                            counter    endpoint, status (COMPLETED|FAILED|CANCELLED)
``acestep_failures_total``                            counter    endpoint, error_type
``acestep_queue_wait_seconds``                        histogram  endpoint (submitted -> started)
``acestep_run_seconds``                               histogram  endpoint (started -> finished)
``acestep_billed_audio_seconds_total``                counter    endpoint (seconds of audio billed)
``acestep_http_responses_total``                      counter    method, code
``acestep_queue_depth``                               gauge      state (queued|running)
``acestep_webhook_attempts_total``                    counter    result (delivered|failed|refused)
``acestep_webhook_retries_total``                     counter    (attempts after a request's first)
``acestep_webhook_deliveries_total``                  counter    outcome (delivered|failed), once each
``acestep_gpu_memory_in_use_bytes``                   gauge      device (only where CUDA is initialised)
``acestep_gpu_memory_peak_bytes``                     gauge      device (only where CUDA is initialised)
====================================================  =========  ===========================================
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from acestep_app.serving.jobs import Job, JobStatus

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the text format every Prometheus reads
FINAL_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
# Seconds: a tiny CPU model answers in well under a second, a 4-minute song on a cold GPU in minutes.
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
RUN_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 90, 120, 180, 300, 600)

QueueDepth = Callable[[], Mapping[str, int]]  # {"queued": n, "running": m}
GpuMemory = Callable[[], Iterable[tuple[str, int, int]]]  # (device, bytes in use, peak bytes)


def cuda_memory() -> list[tuple[str, int, int]]:
    """Per CUDA device: bytes allocated by torch now and at peak; nothing when this process has not used CUDA.

    torch is never imported here: a process that serves on a GPU has imported it already.
    """
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    return [(f"cuda:{index}", int(torch.cuda.memory_allocated(index)), int(torch.cuda.max_memory_allocated(index)))
            for index in range(torch.cuda.device_count())]


class ScrapeTimeGauges:
    """A collector reading the queue depth and GPU memory when scraped; a failing source is skipped, not fatal."""

    def __init__(self, queue_depth: QueueDepth | None, gpu_memory: GpuMemory | None):
        self.queue_depth = queue_depth
        self.gpu_memory = gpu_memory

    def describe(self):
        return []  # the series are dynamic (GPU devices appear only on a GPU)

    def collect(self):
        if self.queue_depth is not None:
            depth = GaugeMetricFamily("acestep_queue_depth", "Requests waiting (queued) or being run (running).",
                                      labels=["state"])
            try:
                for state, count in self.queue_depth().items():
                    depth.add_metric([state], count)
                yield depth
            except Exception:
                logger.exception("metrics: the queue depth could not be read")
        if self.gpu_memory is not None:
            try:
                devices = list(self.gpu_memory())
            except Exception:
                logger.exception("metrics: GPU memory could not be read")
                devices = []
            if devices:
                in_use = GaugeMetricFamily("acestep_gpu_memory_in_use_bytes", "GPU memory allocated by tensors now.",
                                           labels=["device"])
                peak = GaugeMetricFamily("acestep_gpu_memory_peak_bytes",
                                         "Most GPU memory allocated by tensors since the process started.",
                                         labels=["device"])
                for device, now, most in devices:
                    in_use.add_metric([device], now)
                    peak.add_metric([device], most)
                yield in_use
                yield peak


class Metrics:
    """The metrics of one app; ``endpoints`` are its endpoint names (their series start at 0).

    Args:
        endpoints: names of the endpoints served.
        queue_depth: ``() -> {"queued": n, "running": m}``, read at each scrape (None: not exported).
        gpu_memory: ``() -> [(device, in use, peak)]``, read at each scrape (default: this process's CUDA).
        before_scrape: called first at each scrape (e.g. to take in jobs other processes finished).
    """

    def __init__(self, endpoints: Iterable[str], *, queue_depth: QueueDepth | None = None,
                 gpu_memory: GpuMemory | None = cuda_memory, before_scrape: Callable[[], None] | None = None):
        self.before_scrape = before_scrape
        self.registry = CollectorRegistry()
        self.endpoints = tuple(endpoints)
        registry = self.registry
        self.submitted = Counter("acestep_requests_submitted", "Requests accepted (synchronous and queued).",
                                 ["endpoint"], registry=registry)
        self.finished = Counter("acestep_requests", "Requests finished, by endpoint and final status.",
                                ["endpoint", "status"], registry=registry)
        self.failures = Counter("acestep_failures", "Failed requests by error type (cancels included).",
                                ["endpoint", "error_type"], registry=registry)
        self.queue_wait = Histogram("acestep_queue_wait_seconds", "Seconds from submission to the start of the run.",
                                    ["endpoint"], buckets=WAIT_BUCKETS, registry=registry)
        self.run_time = Histogram("acestep_run_seconds", "Seconds from the start of the run to its end.",
                                  ["endpoint"], buckets=RUN_BUCKETS, registry=registry)
        self.billed_seconds = Counter("acestep_billed_audio_seconds", "Seconds of returned audio billed.",
                                      ["endpoint"], registry=registry)
        self.http_responses = Counter("acestep_http_responses", "HTTP responses by method and status code.",
                                      ["method", "code"], registry=registry)
        self.webhook_attempts = Counter("acestep_webhook_attempts", "Webhook POSTs by result.", ["result"],
                                        registry=registry)
        self.webhook_retries = Counter("acestep_webhook_retries", "Webhook attempts after a request's first one.",
                                       registry=registry)
        self.webhook_deliveries = Counter("acestep_webhook_deliveries",
                                          "Webhooks settled for good: delivered, or failed after the last attempt.",
                                          ["outcome"], registry=registry)
        registry.register(ScrapeTimeGauges(queue_depth, gpu_memory))
        for endpoint in self.endpoints:
            self.submitted.labels(endpoint)
            self.billed_seconds.labels(endpoint)
            for status in FINAL_STATUSES:
                self.finished.labels(endpoint, status.value)
        for result in ("delivered", "failed", "refused"):
            self.webhook_attempts.labels(result)
        for outcome in ("delivered", "failed"):
            self.webhook_deliveries.labels(outcome)

    # -- hooks -----------------------------------------------------------------------------------------

    def job_submitted(self, job: Job) -> None:
        self.submitted.labels(job.endpoint).inc()

    def job_finished(self, job: Job) -> None:
        """A job's terminal transition (call once per job: the queue's ``on_finished``)."""
        endpoint = job.endpoint
        self.finished.labels(endpoint, job.status.value).inc()
        if job.status is not JobStatus.COMPLETED:
            self.failures.labels(endpoint, job.error_type or "unknown").inc()
        if job.started_at is not None:
            self.queue_wait.labels(endpoint).observe(max(0.0, job.started_at - job.created_at))
            if job.finished_at is not None:
                self.run_time.labels(endpoint).observe(max(0.0, job.finished_at - job.started_at))
        if job.status is JobStatus.COMPLETED:
            self.billed_seconds.labels(endpoint).inc(job.billable_seconds)

    def http_response(self, method: str, code: int) -> None:
        self.http_responses.labels(method, str(code)).inc()

    def webhook_attempt(self, attempt: int, result: str, final: bool) -> None:
        """One webhook POST (``attempt``: its number for that request, from 1); ``final``: the delivery is settled."""
        self.webhook_attempts.labels(result).inc()
        if attempt > 1:
            self.webhook_retries.inc()
        if final:
            self.webhook_deliveries.labels("delivered" if result == "delivered" else "failed").inc()

    def queue(self, store, runner, on_finished: Callable[[Job], None] | None = None, **options):
        """A :class:`~acestep_app.serving.queue.QueueService` whose submits and terminal transitions are counted
        (``on_finished`` runs after the count; ``options``: the service's caps and input stash)."""
        from acestep_app.serving.queue import QueueService

        def finished(job: Job) -> None:
            self.job_finished(job)
            if on_finished is not None:
                on_finished(job)

        return QueueService(store, runner, finished, on_submitted=self.job_submitted, **options)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        if self.before_scrape is not None:
            try:
                self.before_scrape()
            except Exception:  # the counters served are then those of the last successful refresh
                logger.exception("metrics: refreshing before the scrape failed")
        return generate_latest(self.registry)
