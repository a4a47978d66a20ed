"""``surgeguard worker``: one worker process, from settings to exit status.

The edge of the worker: it turns settings into a ``WorkerConfig`` and a mailer,
connects to Redis, serves ``/metrics``, and maps SIGTERM/SIGINT to a graceful stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

import redis.asyncio as aioredis
import uvloop
from prometheus_client import CollectorRegistry

from surgeguard.runtime import redis_client
from surgeguard.settings import SettingsError
from surgeguard_target_app.jobs.store import JobStore
from surgeguard_target_app.settings import WorkerSettings
from surgeguard_target_app.worker.http import WorkerHttp
from surgeguard_target_app.worker.mailer import Mailer
from surgeguard_target_app.worker.metrics import WorkerMetrics
from surgeguard_target_app.worker.retry_policy import RetryPolicy
from surgeguard_target_app.worker.tasks import build_handlers
from surgeguard_target_app.worker.worker import Worker, WorkerConfig

log = logging.getLogger("surgeguard_target_app.worker.worker")

# Longer than the longest XREADGROUP block (1 s), so a blocked read is never cut off.
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 1.0


def worker_config(settings: WorkerSettings, consumer: str | None = None) -> WorkerConfig:
    """The worker's configuration from ``settings``; raises ``SettingsError``."""
    if settings.job_reclaim_idle_ms <= settings.job_timeout_ms:
        raise SettingsError(
            f"invalid settings: SURGEGUARD_JOB_RECLAIM_IDLE_MS ({settings.job_reclaim_idle_ms})"
            f" must exceed SURGEGUARD_JOB_TIMEOUT_MS ({settings.job_timeout_ms}), or a job "
            "still running would be taken over and run again"
        )
    if settings.job_backoff_max_ms < settings.job_backoff_base_ms:
        raise SettingsError(
            f"invalid settings: SURGEGUARD_JOB_BACKOFF_MAX_MS ({settings.job_backoff_max_ms}) "
            f"must be >= SURGEGUARD_JOB_BACKOFF_BASE_MS ({settings.job_backoff_base_ms})"
        )
    try:
        return WorkerConfig(
            consumer=consumer or settings.worker_id or f"{socket.gethostname()}-{os.getpid()}",
            concurrency=settings.worker_concurrency,
            policy=RetryPolicy(
                max_attempts=settings.job_max_attempts,
                base_s=settings.job_backoff_base_ms / 1000.0,
                cap_s=settings.job_backoff_max_ms / 1000.0,
            ),
            job_timeout_s=settings.job_timeout_ms / 1000.0,
            reclaim_idle_ms=settings.job_reclaim_idle_ms,
            shutdown_timeout_s=settings.worker_shutdown_timeout_ms / 1000.0,
        )
    except ValueError as exc:
        raise SettingsError(f"invalid worker settings: {exc}") from None


def build_mailer(settings: WorkerSettings, sender: str) -> Mailer:
    try:
        return Mailer(
            latency_s=settings.mailer_latency_ms / 1000.0,
            failure_rate=settings.mailer_failure_rate,
            poison=settings.mailer_poison_pattern,
            sender=sender,
        )
    except ValueError as exc:
        raise SettingsError(f"invalid setting SURGEGUARD_MAILER_POISON_PATTERN: {exc}") from None


def connect(url: str) -> aioredis.Redis:
    # The worker's loops do their own backoff beyond the client's one retry.
    return redis_client.connect(
        url, timeout_s=SOCKET_TIMEOUT_S, connect_timeout_s=CONNECT_TIMEOUT_S
    )


def run_worker(settings: WorkerSettings, *, consumer: str | None = None) -> int:
    """Run one worker until SIGTERM/SIGINT; returns the exit status (0 after a stop).

    Raises ``SettingsError`` before starting anything when the settings cannot work."""
    if not settings.redis_url:
        raise SettingsError(
            "SURGEGUARD_REDIS_URL is not set: a worker needs the Redis the target enqueues into"
        )
    config = worker_config(settings, consumer)
    mailer = build_mailer(settings, config.consumer)
    uvloop.run(_serve(settings, settings.redis_url, config, mailer))
    return 0


async def _serve(settings: WorkerSettings, url: str, config: WorkerConfig, mailer: Mailer) -> None:
    client = connect(url)
    handlers = build_handlers(mailer)
    store = JobStore(
        client,
        effect_maxlen=settings.outbox_maxlen,
        dead_letters_maxlen=settings.dead_letters_maxlen,
    )
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, tasks=handlers, streams=store.streams)
    worker = Worker(store, handlers, config, metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    http = WorkerHttp(
        registry, ready=lambda: worker.ready, host=settings.host, port=settings.worker_metrics_port
    )
    await http.start()
    print(
        f"worker {config.consumer} metrics on http://{settings.host}:{http.port}/metrics "
        f"(concurrency {config.concurrency})",
        flush=True,
    )
    try:
        await worker.run()
    finally:
        await http.stop()
        await client.aclose()
    log.info("worker %s stopped", config.consumer)
