"""Issue 16: alerts reach someone. Alertmanager in compose, wired to the Prometheus rules,
its routes and receivers, and the stand-in webhook receiver (alertmanager/receiver.py).

As files: amtool accepts the config; every alert of the rules routes to the receiver of
its severity; the inhibit rules name real alerts and labels those alerts carry; the
webhooks point at the compose receiver on the port it listens on; Prometheus sends to
the compose Alertmanager; the docs name every alert and their example config is valid.
Live: a real Prometheus with the project's rules scrapes a stand-in worker
(tests/ops/exporter.py) whose dead-letter counter the test moves; a real Alertmanager
(Debian's prometheus-alertmanager) with the project's config, only the receiver URLs
and the first wait shortened, posts the alert to the real receiver (the script compose
runs), and the test reads what arrived: its name, labels and rendered annotations.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.ops.exporter import StaticExporter
from tests.support.polling import until_truthy
from tests.support.processes import child, free_port, tail
from tests.support.prometheus import PROMETHEUS, prometheus

ROOT = Path(__file__).resolve().parents[2]
AM_CONFIG = ROOT / "alertmanager" / "alertmanager.yml"
RECEIVER = ROOT / "alertmanager" / "receiver.py"
COMPOSE = ROOT / "docker-compose.yml"
PROM_CONFIG = ROOT / "prometheus" / "prometheus.yml"
RULE_FILES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = ROOT / "prometheus" / "tests" / "rules_test.yml"

AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None,
    reason="amtool is not installed (CI installs Debian's prometheus-alertmanager package)",
)
needs_alertmanager = pytest.mark.skipif(
    ALERTMANAGER is None or PROMETHEUS is None,
    reason="alertmanager or prometheus is not installed (CI installs Debian's "
    "prometheus-alertmanager and prometheus packages)",
)
SEVERITY_RECEIVERS = {"critical": "surgeguard-critical", "warning": "surgeguard-warning"}
DEADLINE_S = 45.0
DEAD_LETTERED = 'surgeguard_jobs_dead_total{task="welcome_email"}'


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path} is not a YAML mapping"
    return document


def alerts() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def services() -> dict[str, dict[str, Any]]:
    found = load_yaml(COMPOSE)["services"]
    assert isinstance(found, dict)
    return found


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(part) for part in cmd]


def webhook_urls(config: dict[str, Any]) -> dict[str, list[str]]:
    return {
        receiver["name"]: [hook["url"] for hook in receiver.get("webhook_configs", [])]
        for receiver in config["receivers"]
    }


def receiver_module() -> ModuleType:
    """alertmanager/receiver.py is a script, not a package module: load it by path."""
    spec = importlib.util.spec_from_file_location("alert_receiver", RECEIVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the files ----------------------------------------------------------------------------


@needs_amtool
def test_amtool_accepts_the_config() -> None:
    assert AMTOOL is not None
    result = subprocess.run(
        [AMTOOL, "check-config", str(AM_CONFIG)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_amtool
def test_every_alert_of_the_rules_routes_to_the_receiver_of_its_severity() -> None:
    """amtool walks the routing tree as Alertmanager does, with each alert's labels."""
    assert AMTOOL is not None
    for alert in alerts():
        labels = {"alertname": alert["alert"], **alert["labels"]}
        result = subprocess.run(
            [
                AMTOOL,
                "config",
                "routes",
                "test",
                f"--config.file={AM_CONFIG}",
                *(f"{k}={v}" for k, v in labels.items()),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        routed = result.stdout.split()
        assert routed == [SEVERITY_RECEIVERS[labels["severity"]]], (alert["alert"], routed)


def test_grouping_and_repeats_are_set_and_critical_pages_sooner() -> None:
    route = load_yaml(AM_CONFIG)["route"]
    assert route["group_by"] == ["alertname", "severity"]
    for key in ("group_wait", "group_interval", "repeat_interval"):
        assert key in route, key
    (critical,) = [r for r in route["routes"] if r["matchers"] == ['severity="critical"']]
    assert critical["receiver"] == SEVERITY_RECEIVERS["critical"]
    seconds = {"s": 1, "m": 60, "h": 3600}

    def s(value: str) -> int:
        return int(value[:-1]) * seconds[value[-1]]

    assert s(critical["group_wait"]) < s(route["group_wait"])
    assert s(critical["repeat_interval"]) < s(route["repeat_interval"])
    # Every severity the rules use has a receiver, and every receiver says when it is over.
    config = load_yaml(AM_CONFIG)
    assert {a["labels"]["severity"] for a in alerts()} <= SEVERITY_RECEIVERS.keys()
    assert set(SEVERITY_RECEIVERS.values()) == set(webhook_urls(config))
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            assert hook["send_resolved"] is True, receiver["name"]


def expected_labels() -> dict[str, set[str]]:
    """Alert name -> the label names it fires with, from the rules' unit tests
    (prometheus/tests/rules_test.yml, which promtool runs)."""
    found: dict[str, set[str]] = {}
    for test in load_yaml(RULE_TESTS)["tests"]:
        for case in test.get("alert_rule_test", []):
            for alert in case["exp_alerts"]:
                found.setdefault(case["alertname"], set()).update(alert["exp_labels"])
    return found


def matching(matcher: str, names: set[str]) -> set[str]:
    """Alert names an alertname matcher (``alertname="X"`` or ``=~"X|Y"``) selects."""
    label, _, value = matcher.partition("=")
    assert label == "alertname", matcher
    wanted = set(value.removeprefix("~").strip('"').split("|"))
    assert wanted <= names, f"{matcher} names unknown alerts {sorted(wanted - names)}"
    return wanted


def test_inhibit_rules_name_real_alerts_and_labels_both_sides_carry() -> None:
    names = {a["alert"] for a in alerts()}
    severities = {a["alert"]: a["labels"]["severity"] for a in alerts()}
    carried = expected_labels()
    rules = load_yaml(AM_CONFIG)["inhibit_rules"]
    assert rules
    for rule in rules:
        (source,) = rule["source_matchers"]
        (source_name,) = matching(source, names)
        (target,) = rule["target_matchers"]
        if target.startswith("severity="):
            targets = {n for n, sev in severities.items() if f'severity="{sev}"' == target}
        else:
            targets = matching(target, names)
        assert targets and source_name not in targets, rule
        # `equal` labels must be on the source, and on at least one target, or the rule
        # never holds anything back.
        assert set(rule["equal"]) <= carried[source_name], (source_name, rule["equal"])
        held = {t for t in targets if set(rule["equal"]) <= carried.get(t, set())}
        assert held, f"no target of {rule} carries {rule['equal']}"


def test_the_webhooks_reach_the_compose_receiver_on_its_port() -> None:
    receiver_service = services()["alert-log"]
    cmd = command(receiver_service)
    port = cmd[cmd.index("--port") + 1]
    assert "/opt/alert-log/receiver.py" in cmd
    mounts = [str(v) for v in receiver_service["volumes"]]
    assert "./alertmanager/receiver.py:/opt/alert-log/receiver.py:ro" in mounts
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(receiver_service["healthcheck"]["test"])
    for name, urls in webhook_urls(load_yaml(AM_CONFIG)).items():
        assert urls, name
        for url in urls:
            parts = urlsplit(url)
            assert (parts.hostname, str(parts.port)) == ("alert-log", port), url
    # The two severities land on distinct paths, so the log tells them apart.
    paths = [urlsplit(u).path for urls in webhook_urls(load_yaml(AM_CONFIG)).values() for u in urls]
    assert len(set(paths)) == len(paths)


def test_prometheus_sends_alerts_to_the_compose_alertmanager() -> None:
    alertmanager = services()["alertmanager"]
    assert str(alertmanager["image"]).startswith("prom/alertmanager:v")
    cmd = command(alertmanager)
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in cmd
    assert "./alertmanager:/etc/alertmanager:ro" in [str(v) for v in alertmanager["volumes"]]
    assert "127.0.0.1:9093:9093" in alertmanager["ports"]
    assert alertmanager["depends_on"] == {"alert-log": {"condition": "service_healthy"}}
    config = load_yaml(PROM_CONFIG)
    (manager,) = config["alerting"]["alertmanagers"]
    assert [t for sc in manager["static_configs"] for t in sc["targets"]] == ["alertmanager:9093"]
    assert "alertmanager-data" in load_yaml(COMPOSE)["volumes"]


def test_the_receiver_logs_one_line_per_alert() -> None:
    receiver = receiver_module()
    notification = {
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "A", "severity": "warning", "instance": "t1:8000"},
                "annotations": {"summary": "t1 is slow"},
            },
            {"status": "resolved", "labels": {"alertname": "B"}, "annotations": {}},
        ]
    }
    assert receiver.describe("/warning", notification) == [
        "/warning FIRING [warning] A {instance=t1:8000} t1 is slow",
        "/warning RESOLVED [-] B {}",
    ]


# --- live: Prometheus -> Alertmanager -> webhook -------------------------------------------


def alertmanager_config(receiver_url: str, path: Path) -> Path:
    """The project's config, its webhooks aimed at the test's receiver (same paths) and
    the first wait of a group shortened from seconds to one."""
    config = load_yaml(AM_CONFIG)
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = receiver_url + urlsplit(hook["url"]).path
    config["route"]["group_wait"] = "1s"
    for route in config["route"]["routes"]:
        route.pop("group_wait", None)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def prometheus_config(exporter: str, alertmanager: str) -> str:
    """The project's prometheus.yml: its rules and alerting, aimed at loopback."""
    config = load_yaml(PROM_CONFIG)
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(PROM_CONFIG.parent / p) for p in config["rule_files"]]
    for manager in config["alerting"]["alertmanagers"]:
        manager["static_configs"] = [{"targets": [alertmanager]}]
    config["scrape_configs"] = [{"job_name": "worker", "static_configs": [{"targets": [exporter]}]}]
    return yaml.safe_dump(config, sort_keys=False)


def until(what: str, probe: Callable[[], Any]) -> Any:
    return until_truthy(probe, DEADLINE_S, what, every_s=0.25)


@needs_alertmanager
def test_a_firing_rule_reaches_the_webhook_with_its_labels_and_annotations(
    tmp_path: Path,
) -> None:
    assert ALERTMANAGER is not None
    receiver_port, am_port = free_port(), free_port()
    receiver_url = f"http://127.0.0.1:{receiver_port}"
    am_url = f"http://127.0.0.1:{am_port}"
    http = httpx.Client(timeout=5.0, trust_env=False)
    with ExitStack() as cleanup:
        cleanup.callback(http.close)
        receiver = cleanup.enter_context(
            child(
                [sys.executable, str(RECEIVER), "--port", str(receiver_port)],
                log=tmp_path / "receiver.log",
                health_url=f"{receiver_url}/healthz",
            )
        )
        config = alertmanager_config(receiver_url, tmp_path / "alertmanager.yml")
        manager = cleanup.enter_context(
            child(
                [
                    ALERTMANAGER,
                    f"--config.file={config}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
                log=tmp_path / "alertmanager.log",
                health_url=f"{am_url}/-/ready",
            )
        )
        exporter = cleanup.enter_context(StaticExporter())
        exporter.set(DEAD_LETTERED, 0)
        prom_url = cleanup.enter_context(
            prometheus(prometheus_config(exporter.address, f"127.0.0.1:{am_port}"), tmp_path)
        )
        try:
            # The counter is seen at 0 first, then moves: an increase, so the alert
            # (no `for:`) fires on the next evaluation.
            until(
                "Prometheus scraped the exporter",
                lambda: http.get(
                    f"{prom_url}/api/v1/query", params={"query": "surgeguard_jobs_dead_total"}
                ).json()["data"]["result"],
            )
            exporter.set(DEAD_LETTERED, 3)
            notifications = until(
                "the alert reached the webhook",
                lambda: [
                    item
                    for item in http.get(f"{receiver_url}/received").json()["received"]
                    if any(
                        a["labels"]["alertname"] == "SurgeguardJobsDeadLettered"
                        for a in item["notification"]["alerts"]
                    )
                ],
            )
        except AssertionError:
            for name in ("receiver", "alertmanager"):
                print(f"--- {name}\n{tail(tmp_path / f'{name}.log')}")
            raise
        assert receiver.poll() is None and manager.poll() is None
        # Alertmanager itself holds it as active (not inhibited, not silenced).
        active = http.get(f"{am_url}/api/v2/alerts").json()
        assert [a["status"]["state"] for a in active] == ["active"], active

    item = notifications[0]
    notification = item["notification"]
    # The warning route: its receiver and its webhook path.
    assert item["path"] == "/warning"
    assert notification["receiver"] == "surgeguard-warning"
    assert notification["status"] == "firing"
    assert notification["groupLabels"] == {
        "alertname": "SurgeguardJobsDeadLettered",
        "severity": "warning",
    }
    (alert,) = notification["alerts"]
    assert alert["status"] == "firing"
    assert alert["labels"] == {
        "alertname": "SurgeguardJobsDeadLettered",
        "severity": "warning",
        "task": "welcome_email",
    }
    annotations = alert["annotations"]
    assert annotations["summary"] == "welcome_email jobs went to the dead-letter stream"
    count, _, rest = annotations["description"].partition(" ")
    assert count.isdigit() and int(count) >= 3, annotations["description"]
    assert rest == (
        "welcome_email jobs used up their attempts in the last 10 minutes and wait in "
        "the dead-letter stream for a person."
    )
    # A link back to the expression in Prometheus, for whoever gets the page.
    assert alert["generatorURL"].startswith("http")
    # ...and the receiver logged it, one line.
    logged = (tmp_path / "receiver.log").read_text()
    assert (
        "/warning FIRING [warning] SurgeguardJobsDeadLettered {task=welcome_email} "
        "welcome_email jobs went to the dead-letter stream"
    ) in logged


# --- the documentation -------------------------------------------------------------------

DOC = ROOT / "docs" / "alerting.md"


def test_the_alerting_page_names_every_alert_with_its_severity() -> None:
    text = DOC.read_text()
    for alert in alerts():
        row = f"| `{alert['alert']}` | {alert['labels']['severity']} |"
        assert row in text, f"docs/alerting.md has no row {row}"


@needs_amtool
def test_the_pagerduty_and_slack_example_is_a_config_amtool_accepts(tmp_path: Path) -> None:
    assert AMTOOL is not None
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    (example,) = [b for b in blocks if "pagerduty_configs" in b]
    config = yaml.safe_load(example)
    assert set(webhook_urls(config)) == set(SEVERITY_RECEIVERS.values())
    path = tmp_path / "example.yml"
    path.write_text(example)
    result = subprocess.run(
        [AMTOOL, "check-config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
