"""Issues 7 and 16: the Prometheus config and rules, and every PromQL expression of the
Grafana dashboards (panels and annotations) and of the rules against a real Prometheus.

promtool checks the config and the rules and runs the rules' unit tests
(prometheus/tests/rules_test.yml: the alerts fire, and stay quiet, on synthetic series).
Then a real Prometheus, running the repository's prometheus.yml with only the scrape
targets and rule paths rewritten, scrapes a live target, worker and controller (real
processes, real Redis) under real traffic, and every dashboard query and every rule
must return data, not only parse. Every annotation query of every dashboard must
evaluate over a range, as Grafana asks it, and read only metrics the live processes
export; the modes band shows the mode switched on, and a slow db (a chaos drill) makes
the controller cut, which the cuts annotation marks. Against a stand-in exporter whose
counters the test moves, each annotation must mark its event (and nothing before it)
with the labels its title and tags name.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from tests.ops.exporter import StaticExporter
from tests.support.polling import until_truthy
from tests.support.processes import child_env, free_port, spawn, stop, tail, wait_healthy
from tests.support.prometheus import prometheus as running_prometheus
from tests.support.prometheus import scrape_config

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "prometheus"
CONFIG = PROM_DIR / "prometheus.yml"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
RULE_TESTS = PROM_DIR / "tests" / "rules_test.yml"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (CI installs Debian's prometheus package)",
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="prometheus is not installed (CI installs Debian's prometheus package)",
)

# The compose service names prometheus.yml scrapes, per job.
COMPOSE_TARGETS = {
    "target": ["target1:8000", "target2:8000", "target3:8000"],
    "worker": ["worker:8002"],
    "controller": ["controller:8001"],
    "prometheus": ["localhost:9090"],
}
REPLICA = "replica-a"
TOKEN = "ops-test-token-of-24-chars"
API_KEY = {"X-Api-Key": "demo-key"}
# Dashboard variables as Grafana fills them: one replica and one dependency selected; the
# intervals as small as Grafana makes them for the datasource's 1 s scrape interval
# (4 scrapes).
VARIABLES = {
    "replica": REPLICA,
    "dependency": "db",
    "__rate_interval": "4s",
    "__interval": "1s",
    "__range": "1m",
}
# Metrics an annotation may read before any process exports them, and why (once one is
# exported it is checked like the others; then take it off this list).
AWAITED = {
    "surgeguard_controller_drill_running": "the controller does not export its drills yet",
}
DATA_DEADLINE_S = 25.0


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path} is not a YAML mapping"
    return document


def rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for g in load_yaml(path)["groups"] for rule in g["rules"]]


# --- the files, without a server ---------------------------------------------------------


def test_the_config_scrapes_every_service_every_second_or_two() -> None:
    config = load_yaml(CONFIG)
    scrape_interval = config["global"]["scrape_interval"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"target", "worker", "controller"} <= jobs.keys()
    for name, targets in COMPOSE_TARGETS.items():
        assert [t for sc in jobs[name]["static_configs"] for t in sc["targets"]] == targets
    for name in ("target", "worker", "controller"):
        assert jobs[name].get("scrape_interval", scrape_interval) in ("1s", "2s"), name
    # Relative to the config file: /etc/prometheus/rules/*.yml in the container.
    assert config["rule_files"] == ["rules/*.yml"]


def test_every_rule_is_labelled_and_every_alert_explained_and_unit_tested() -> None:
    tested = {
        case["alertname"]
        for test in load_yaml(RULE_TESTS)["tests"]
        for case in test.get("alert_rule_test", [])
    }
    alerts = [rule for rule in rules() if "alert" in rule]
    records = [rule["record"] for rule in rules() if "record" in rule]
    assert len(alerts) >= 4 and len(records) >= 8
    assert len(records) == len(set(records))
    for alert in alerts:
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        assert {"summary", "description"} <= alert["annotations"].keys(), name
        assert "$" in alert["annotations"]["description"], f"{name}: no $labels or $value"
        assert name in tested, f"{name} has no case in {RULE_TESTS.name}"
    # The four: SLO burn, limit stuck at its minimum, job lag, stale plane.
    expressions = {alert["alert"]: alert["expr"] for alert in alerts}
    assert any("slow_requests" in e for e in expressions.values())
    assert any("surgeguard_concurrency_limit" in e for e in expressions.values())
    assert any("surgeguard_jobs_oldest_pending_age_seconds" in e for e in expressions.values())
    assert any("surgeguard_control_plane_staleness_seconds" in e for e in expressions.values())
    for quantile in ("p50", "p95", "p99"):
        for level in ("instance", "job"):
            assert f"{level}:surgeguard_request_duration_seconds:{quantile}_rate1m" in records
    assert "job:surgeguard_rejection_ratio:rate1m" in records


@needs_promtool
def test_promtool_accepts_the_config_and_the_rules() -> None:
    config = promtool("check", "config", CONFIG)
    assert config.returncode == 0, config.stdout + config.stderr
    # The relative glob found every rule file (it finds none, silently, when wrong).
    assert f"{len(RULE_FILES)} rule files found" in config.stdout + config.stderr
    checked = promtool("check", "rules", *RULE_FILES)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_the_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


# --- a real Prometheus scraping live processes --------------------------------------------


def substitute(expr: str, variables: set[str]) -> str:
    """``expr`` with the dashboard's variables replaced as Grafana would."""
    assert variables <= VARIABLES.keys(), f"give the test a value for {variables}"

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in VARIABLES, f"unknown dashboard variable ${name}"
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)


def dashboard_queries() -> list[tuple[str, str]]:
    """(dashboard: panel title, PromQL) for every query of every dashboard, variables
    substituted as Grafana would with the replica variable set to one replica."""
    queries = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        panels = [p for top in dashboard["panels"] for p in (top, *top.get("panels", []))]
        for panel in panels:
            for target in panel.get("targets", []):
                expr = substitute(target["expr"], variables)
                queries.append((f"{path.stem}: {panel['title']} [{target['refId']}]", expr))
    return queries


def annotation_queries() -> dict[str, str]:
    """Annotation name -> PromQL (variables substituted), over every dashboard; one name
    is one query everywhere (test_grafana_dashboard.py checks they are the same)."""
    found: dict[str, str] = {}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        variables = {v["name"] for v in dashboard["templating"]["list"]} | {"replica"}
        for annotation in dashboard["annotations"]["list"]:
            if annotation.get("builtIn"):
                continue
            expr = substitute(annotation["expr"], variables)
            assert found.setdefault(annotation["name"], expr) == expr, annotation["name"]
    assert found, "no annotation queries"
    return found


def metric_names(expr: str) -> set[str]:
    """The surgeguard series an expression reads (recording rules' names aside)."""
    return set(re.findall(r"(?<![\w:])surgeguard_\w+(?![\w:])", expr))


def prometheus_config(ports: dict[str, int], path: Path) -> Path:
    """The repository's prometheus.yml aimed at live processes on loopback ports."""
    config = load_yaml(CONFIG)
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(PROM_DIR / pattern) for pattern in config["rule_files"]]
    for job in config["scrape_configs"]:
        name = job["job_name"]
        assert name in ports, f"the test does not know where to point job {name!r}"
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[name]}"]}]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=5.0, trust_env=False)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query; an error fails the test."""
        response = self.http.post("/api/v1/query", data={"query": expr})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (
            f"{expr}\n-> {body.get('errorType')}: {body.get('error')}"
        )
        assert body["data"]["resultType"] == "vector", expr
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query_range(self, expr: str, seconds: float, step_s: float = 1.0) -> list[dict[str, Any]]:
        """The result matrix over the last ``seconds``, as Grafana asks an annotation."""
        end = time.time()
        response = self.http.post(
            "/api/v1/query_range",
            data={"query": expr, "start": end - seconds, "end": end, "step": step_s},
        )
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (
            f"{expr}\n-> {body.get('errorType')}: {body.get('error')}"
        )
        assert body["data"]["resultType"] == "matrix", expr
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one series with a number (NaN: a quantile of no requests, no data)."""
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def start_prometheus(config: Path, data: Path, port: int) -> subprocess.Popen[bytes]:
    assert PROMETHEUS is not None
    with (data.parent / "prometheus.log").open("wb") as log:
        return subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


class Traffic:
    """Client threads against one replica until stopped: feeds, items, signups (jobs),
    pings, and sheddable feeds that the shed_sheddable mode turns away."""

    def __init__(self, url: str, threads: int = 6) -> None:
        self.url = url
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _requests(self, n: int) -> Iterator[Callable[[httpx.Client], httpx.Response]]:
        yield lambda c: c.get("/feed")
        yield lambda c: c.get(f"/items/{n % 50 + 1}")
        yield lambda c: c.get("/feed", headers={"X-Priority": "sheddable"})
        yield lambda c: c.get("/ping")
        if n % 3 == 0:
            yield lambda c: c.post("/signup", json={"email": f"u{n}@example.com", "name": "U"})

    def _run(self, worker: int) -> None:
        with httpx.Client(
            base_url=self.url, headers=API_KEY, timeout=5.0, trust_env=False
        ) as client:
            n = worker * 100_000
            while not self._stop.is_set():
                for send in self._requests(n):
                    try:
                        status = send(client).status_code
                    except httpx.HTTPError:
                        status = 0  # counted, never raised in a thread
                    with self._lock:
                        self.statuses[status] += 1
                n += 1
                time.sleep(0.005)


@needs_prometheus
def test_every_dashboard_query_and_rule_returns_data_from_a_live_stack(
    redis_server: EmbeddedRedis, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # redis_client: only for its flush, so no jobs or knobs of earlier tests linger.
    ports = {name: free_port() for name in ("target", "worker", "controller", "prometheus")}
    env = child_env(redis_server.url, admin_token=TOKEN, control_poll_ms="200")
    target_url = f"http://127.0.0.1:{ports['target']}"
    controller_url = f"http://127.0.0.1:{ports['controller']}"
    children = {
        # A small limit, so that the traffic also fills the queue.
        "target": [
            "target",
            f"--port={ports['target']}",
            f"--replica-id={REPLICA}",
            "--concurrency-limit=4",
            "--queue-limit=2",
        ],
        "worker": ["worker", f"--metrics-port={ports['worker']}"],
        "controller": ["controller", f"--target={target_url}", f"--port={ports['controller']}"],
    }
    with ExitStack() as cleanup:
        # Everything starts at once: Prometheus's first scrape comes ~5 s after its
        # start anyway, so the children boot meanwhile.
        started = {}
        for name, args in children.items():
            log = tmp_path / f"{name}.log"
            started[name] = (spawn(args, env, log), log)
            cleanup.callback(stop, started[name][0])
        config = prometheus_config(ports, tmp_path / "prometheus.yml")
        prometheus = start_prometheus(config, tmp_path / "tsdb", ports["prometheus"])
        cleanup.callback(stop, prometheus)
        for name, (process, log) in started.items():
            wait_healthy(f"http://127.0.0.1:{ports[name]}/healthz", process, log)
        prom = Prometheus(f"http://127.0.0.1:{ports['prometheus']}")
        cleanup.callback(prom.http.close)
        wait_healthy(f"{prom.url}/-/ready", prometheus, tmp_path / "prometheus.log")

        switched = httpx.put(
            f"{controller_url}/api/v1/modes/shed_sheddable",
            json={"active": True, "reason": "ops test: sheddable traffic is rejected"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5.0,
            trust_env=False,
        )
        assert switched.status_code == 200, switched.text

        traffic = cleanup.enter_context(Traffic(target_url))
        try:
            wait_for_the_stack_in_prometheus(prom)
            check_every_expression(prom)
            exported = set().union(
                *(exported_names(f"http://127.0.0.1:{ports[name]}/metrics") for name in children)
            )
            check_every_annotation(prom, exported)
            check_a_real_cut_is_marked(prom, controller_url)
            for what, expr in dashboard_queries():
                unknown = metric_names(expr) - exported
                assert not unknown, f"{what} reads metrics no process exports: {unknown}"
        except AssertionError:
            for name, (_, log) in started.items():
                print(f"--- {name}\n{tail(log)}")
            print(f"--- prometheus\n{tail(tmp_path / 'prometheus.log')}")
            raise

    statuses = dict(traffic.statuses)  # the clients have stopped
    assert statuses.get(200, 0) > 0 and statuses.get(202, 0) > 0, statuses
    assert statuses.get(429, 0) > 0, statuses


def wait_for_the_stack_in_prometheus(prom: Prometheus) -> None:
    """Until Prometheus holds what every query needs: all three jobs up, admitted and
    rejected requests, a mode on, jobs done by the worker, a controller decision, and
    the rules evaluated on them."""
    conditions = {
        "every job up": 'count(up{job=~"target|worker|controller"} == 1) == 3',
        "admitted requests": 'sum(rate(surgeguard_requests_total{outcome="ok"}[5s])) > 0',
        "rejections": "sum(rate(surgeguard_rejections_total[5s])) > 0",
        "shed_sheddable on": 'max(surgeguard_mode_active{mode="shed_sheddable"}) == 1',
        "jobs done": "sum(surgeguard_jobs_processed_total) > 0",
        "a decision": "sum(surgeguard_controller_decisions_total) > 0",
        "rules evaluated": "job:surgeguard_rejection_ratio:rate1m > 0",
    }
    deadline = time.monotonic() + DATA_DEADLINE_S
    while True:
        missing = [what for what, expr in conditions.items() if not prom.query(expr)]
        if not missing:
            return
        assert time.monotonic() < deadline, f"Prometheus never saw: {missing}"
        time.sleep(0.5)


def check_every_expression(prom: Prometheus) -> None:
    """Every dashboard query and recording rule returns a number; every rule (alerts
    too, which may rightly be empty) evaluates; Prometheus's own evaluations are ok."""
    all_rules = rules()
    must_have_data = dashboard_queries() + [
        (f"record {rule['record']}", rule["expr"]) for rule in all_rules if "record" in rule
    ]
    must_have_data += [
        (f"recorded {rule['record']}", rule["record"]) for rule in all_rules if "record" in rule
    ]
    # Variable values come from the series API, as Grafana's label_values() does.
    replicas = prom.http.get(
        "/api/v1/label/replica/values", params={"match[]": "surgeguard_replica_info"}
    ).json()["data"]
    assert replicas == [REPLICA]

    for rule in all_rules:
        if "alert" in rule:
            prom.query(rule["expr"])  # an error fails here

    # Rates over the shortest windows may miss a beat: allow a few seconds to settle.
    pending = dict(must_have_data)
    last: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 10.0
    while pending and time.monotonic() < deadline:
        for what, expr in list(pending.items()):
            last[what] = prom.query(expr)
            if has_data(last[what]):
                del pending[what]
        if pending:
            time.sleep(0.5)
    assert not pending, "no data from:\n" + "\n".join(
        f"  {what}: {expr}\n    -> {last.get(what)}" for what, expr in pending.items()
    )

    groups = prom.http.get("/api/v1/rules").json()["data"]["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    expected = {rule.get("alert") or rule["record"] for rule in all_rules}
    assert loaded.keys() == expected
    unhealthy = {
        name: (rule["health"], rule.get("lastError"))
        for name, rule in loaded.items()
        if rule["health"] != "ok"
    }
    assert not unhealthy, unhealthy


def exported_names(metrics_url: str) -> set[str]:
    """Every series name a process exports (families without samples included, from
    their TYPE lines; a histogram's _bucket, _count and _sum)."""
    text = httpx.get(metrics_url, timeout=5.0, trust_env=False).text
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def check_every_annotation(prom: Prometheus, exported: set[str]) -> None:
    """Every annotation query evaluates over a range and reads only exported metrics;
    the modes band shows the mode the test switched on."""
    queries = annotation_queries()
    for name, expr in queries.items():
        prom.query_range(expr, 60.0)  # an error fails here
        unknown = metric_names(expr) - exported - AWAITED.keys()
        assert not unknown, f"annotation {name!r} reads metrics no process exports: {unknown}"
    modes = prom.query_range(queries["Modes on"], 30.0)
    assert [series["metric"] for series in modes] == [{"mode": "shed_sheddable"}], modes


def check_a_real_cut_is_marked(prom: Prometheus, controller_url: str) -> None:
    """A drill makes the db 20x slower: the controller cuts a knob, and the cuts
    annotation marks it with the knob's name."""
    slowed = httpx.put(
        f"{controller_url}/api/v1/chaos/db",
        json={"latency_multiplier": 20, "error_rate": 0, "reason": "ops test: a slow db"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5.0,
        trust_env=False,
    )
    assert slowed.status_code == 200, slowed.text
    expr = annotation_queries()["Controller cuts"]
    marks = until(lambda: prom.query_range(expr, 30.0), "a cut marked")
    knobs = {series["metric"]["knob"] for series in marks}
    assert knobs and all(k in ("concurrency_limit", "queue_limit", "bulkhead.db") for k in knobs)
    assert {series["metric"]["applied"] for series in marks} == {"true"}, marks


# --- the annotations mark their events: a stand-in exporter moves the counters ------------

# What the test makes happen, per annotation: the series it moves and the labels the
# mark must carry. Events that must not mark (a grow, a mode that stays off) move too.
EVENTS: dict[str, tuple[list[tuple[str, float, float]], list[dict[str, str]]]] = {
    "Controller cuts": (
        [
            (
                'surgeguard_controller_decisions_total{knob="concurrency_limit",'
                'action="cut",applied="true"}',
                0,
                1,
            ),
            (
                'surgeguard_controller_decisions_total{knob="queue_limit",'
                'action="grow",applied="true"}',
                0,
                5,
            ),
        ],
        [{"knob": "concurrency_limit", "applied": "true"}],
    ),
    "Modes on": (
        [
            ('surgeguard_mode_active{mode="serve_stale"}', 0, 1),
            ('surgeguard_mode_active{mode="read_only"}', 0, 0),
        ],
        [{"mode": "serve_stale"}],
    ),
    "Controller mode switches": (
        [
            (
                'surgeguard_controller_mode_switches_total{mode="recommendations_off",'
                'active="true"}',
                0,
                1,
            )
        ],
        [{"mode": "recommendations_off", "active": "true"}],
    ),
    "Drills": (
        [('surgeguard_controller_drill_running{scenario="spike",source="controller"}', 0, 1)],
        [{"scenario": "spike", "source": "controller"}],
    ),
}


@needs_prometheus
def test_each_annotation_marks_its_event_and_nothing_before(tmp_path: Path) -> None:
    queries = annotation_queries()
    assert queries.keys() == EVENTS.keys(), "tell the test which event marks each annotation"
    with StaticExporter() as exporter:
        exporter.set(f'surgeguard_replica_info{{replica="{REPLICA}"}}', 1)
        for moves, _ in EVENTS.values():
            for series, before, _after in moves:
                exporter.set(series, before)
        with running_prometheus(scrape_config([exporter.address]), tmp_path) as url:
            prom = Prometheus(url)
            try:
                # At rest for a few scrapes: nothing may mark.
                until(lambda: exporter.scrapes >= 3, "three scrapes at rest")
                for name, expr in queries.items():
                    assert prom.query_range(expr, 30.0) == [], f"{name} marks at rest"
                moved_at = time.time()
                for moves, _ in EVENTS.values():
                    for series, _before, after in moves:
                        exporter.set(series, after)
                marks = {
                    name: until(lambda e=expr: prom.query_range(e, 30.0), f"{name} marks")
                    for name, expr in queries.items()
                }
            finally:
                prom.http.close()
    for name, result in marks.items():
        expected = EVENTS[name][1]
        assert [series["metric"] for series in result] == expected, (name, result)
        for series in result:
            first = min(float(t) for t, _ in series["values"])
            # The event's first scrape came after the move: no mark before it.
            assert first >= moved_at - 1.0, (name, first, moved_at)


def until(probe: Callable[[], Any], what: str) -> Any:
    return until_truthy(probe, DATA_DEADLINE_S, what, every_s=0.25)
