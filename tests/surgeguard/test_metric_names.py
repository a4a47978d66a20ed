"""The metric names are one contract: what a real replica and the demo's worker export
is exactly what ``surgeguard.metric_names`` names, and every name the controller reads
is in a real replica's ``/metrics`` (a renamed exporter fails here, not in a storm)."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from surgeguard import metric_names
from surgeguard_target_app.jobs.streams import JOB_STREAMS
from surgeguard_target_app.worker.metrics import WorkerMetrics
from tests.target_app.conftest import API_KEY, StartTarget


def _families(text: str) -> dict[str, str]:
    """Each family in an exposition by the name its readers use (a counter's with
    ``_total``), mapped to its type. The ``_created`` series prometheus_client adds
    beside a counter or histogram belong to that family."""
    parsed = {f.name: f.type for f in text_string_to_metric_families(text)}
    families: dict[str, str] = {}
    for name, kind in parsed.items():
        base = name.removesuffix("_created")
        if base != name and parsed.get(base) in ("counter", "histogram"):
            continue
        families[f"{name}_total" if kind == "counter" else name] = kind
    return families


def _ours(families: dict[str, str]) -> set[str]:
    return {name for name in families if name.startswith(metric_names.PREFIX)}


def _replica_metrics(start_target: StartTarget) -> str:
    target = start_target()
    with httpx.Client(base_url=target.url, timeout=5.0) as http:
        # A read that calls dependencies, so their labelled families have samples.
        assert http.get("/items/1", headers=API_KEY).status_code == 200
        response = http.get("/metrics")
    assert response.status_code == 200
    return response.text


def _worker_metrics() -> str:
    registry = CollectorRegistry()
    WorkerMetrics(registry, tasks=("welcome_email",), streams=JOB_STREAMS)
    return generate_latest(registry).decode()


def test_a_replica_exports_every_metric_the_controller_reads(
    start_target: StartTarget,
) -> None:
    families = _families(_replica_metrics(start_target))
    missing = [name for name in metric_names.CONTROLLER_READS if name not in families]
    assert missing == [], f"the controller reads these, a replica does not export them: {missing}"


def test_every_family_a_replica_or_worker_exports_is_named(start_target: StartTarget) -> None:
    replica = _ours(_families(_replica_metrics(start_target)))
    worker = _ours(_families(_worker_metrics()))
    named = set(metric_names.EXPORTED)
    assert sorted(replica - named) == [], "a replica exports names metric_names does not know"
    assert sorted(worker - named) == [], "the worker exports names metric_names does not know"
    assert sorted(named - replica - worker) == [], "metric_names names what nobody exports"


def test_the_names_carry_what_readers_see() -> None:
    """Counters end in ``_total`` (the sample name), histograms do not (readers append
    ``_bucket``/``_sum``/``_count``), checked against the worker's real families."""
    families = _families(_worker_metrics())
    assert families[metric_names.JOBS_PROCESSED_TOTAL] == "counter"
    assert families[metric_names.JOB_DURATION_SECONDS] == "histogram"
    assert families[metric_names.JOBS_PENDING] == "gauge"
    for name, kind in families.items():
        assert name.endswith("_total") == (kind == "counter"), name
