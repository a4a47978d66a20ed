"""Issues 7 and 11: the Grafana provisioning and the overview dashboard (with the
penalty box and rejections by reason), read as files.

Whether every query of the dashboard returns data is proven against a real Prometheus
in test_prometheus_rules.py; here: the JSON is one Grafana loads and lays out as meant,
and it is wired to the provisioned datasource.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboard.door import REASON_COLOURS
from surgeguard.reasons import REJECTION_REASONS

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
OVERVIEW = GRAFANA / "dashboards" / "surgeguard-overview.json"
GRID_COLUMNS = 24
PANEL_TYPES = {"timeseries", "stat", "state-timeline", "gauge", "bargauge", "table", "text"}
SLO_S = 0.25

# What the overview must show (issue 7), as the metrics its queries read.
REQUIRED_METRICS = {
    "admitted latency percentiles": "surgeguard_request_duration_seconds_bucket",
    "admitted requests": "surgeguard_requests_total",
    "rejections by reason": "surgeguard_rejections_total",
    "in-flight": "surgeguard_inflight_peak",
    "concurrency limit": "surgeguard_concurrency_limit",
    "queue depth": "surgeguard_queue_depth",
    "shed threshold": "surgeguard_queue_limit",
    "dependency in flight": "surgeguard_dependency_inflight",
    "dependency limit": "surgeguard_dependency_limit",
    "active modes": "surgeguard_mode_active",
    "job backlog": "surgeguard_jobs_pending",
    "job lag": "surgeguard_jobs_oldest_pending_age_seconds",
    "controller decisions": "surgeguard_controller_decisions_total",
    # issue 11: the penalty box
    "requests held in the penalty box": "surgeguard_penalty_box_held",
    "penalty box bound": "surgeguard_penalty_box_max_held",
    "penalty box holds": "surgeguard_penalty_box_holds_total",
}


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path} is not a YAML mapping"
    return document


def provisioned_uid() -> str:
    sources = load_yaml(DATASOURCES)["datasources"]
    assert len(sources) == 1, "one provisioned datasource expected"
    uid = sources[0]["uid"]
    assert isinstance(uid, str)
    return uid


def panels_of(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those folded inside a row."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def load(path: Path) -> dict[str, Any]:
    dashboard = json.loads(path.read_text())
    assert isinstance(dashboard, dict)
    return dashboard


@pytest.fixture(params=DASHBOARDS, ids=lambda p: p.name)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    path = request.param
    assert isinstance(path, Path)
    return load(path)


def test_the_overview_dashboard_is_there() -> None:
    assert OVERVIEW in DASHBOARDS


def test_the_datasource_is_provisioned_with_a_fixed_uid() -> None:
    config = load_yaml(DATASOURCES)
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "surgeguard-prometheus"
    assert source["url"] == "http://prometheus:9090"  # the compose service name
    assert source["access"] == "proxy"
    # Grafana needs the scrape interval to size $__rate_interval (4 scrapes).
    assert source["jsonData"]["timeInterval"] in ("1s", "2s")


def test_the_dashboards_are_provisioned_from_files() -> None:
    config = load_yaml(PROVIDERS)
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in panels_of(dashboard)]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {sorted(ids)}"


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    boxes = []
    for panel in panels_of(dashboard):
        grid = panel["gridPos"]
        x, y, w, h = (grid[k] for k in ("x", "y", "w", "h"))
        assert all(isinstance(v, int) for v in (x, y, w, h)), panel["title"]
        assert x >= 0 and x + w <= GRID_COLUMNS, f"{panel['title']}: x={x} w={w}"
        assert y >= 0 and w >= 1 and h >= 1, f"{panel['title']}: {grid}"
        boxes.append((panel["title"], x, y, w, h))
    for (a, ax, ay, aw, ah), (b, bx, by, bw, bh) in combinations(boxes, 2):
        overlap = ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah
        assert not overlap, f"panels {a!r} and {b!r} overlap"


def test_every_panel_and_query_uses_the_provisioned_datasource(
    dashboard: dict[str, Any],
) -> None:
    uid = provisioned_uid()
    for panel in panels_of(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
            assert target["expr"].strip(), panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"{panel['title']}: refIds {ref_ids}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == uid, variable["name"]


def test_panels_are_of_known_types(dashboard: dict[str, Any]) -> None:
    for panel in panels_of(dashboard):
        assert panel["type"] in PANEL_TYPES | {"row"}, panel["title"]


def test_the_replica_variable_selects_replicas_for_the_per_replica_panels() -> None:
    overview = load(OVERVIEW)
    variables = {v["name"]: v for v in overview["templating"]["list"]}
    replica = variables["replica"]
    assert replica["type"] == "query"
    assert replica["definition"] == "label_values(surgeguard_replica_info, replica)"
    assert replica["query"]["query"] == replica["definition"]
    assert replica["multi"] and replica["includeAll"]
    assert replica["allValue"] == ".*"  # "All" also covers replicas that come later

    uses = {
        panel["title"]
        for panel in panels_of(overview)
        if any(re.search(r"\$\{?replica\b", t["expr"]) for t in panel.get("targets", []))
    }
    per_replica = {p["title"] for p in panels_of(overview) if "per replica" in p["title"]}
    assert per_replica and per_replica <= uses
    assert len(uses) >= 8, sorted(uses)


def test_the_latency_panel_draws_the_slo_line() -> None:
    overview = load(OVERVIEW)
    (panel,) = [p for p in panels_of(overview) if "latency percentiles" in p["title"]]
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s"
    # A threshold drawn as a line at the SLO...
    assert defaults["custom"]["thresholdsStyle"]["mode"] in ("line", "dashed", "line+area")
    assert SLO_S in [step["value"] for step in defaults["thresholds"]["steps"]]
    # ...and a constant series, so the SLO shows in the legend and tooltip too.
    exprs = {t["legendFormat"]: t["expr"] for t in panel["targets"]}
    assert exprs["SLO 250 ms"] == f"vector({SLO_S})"
    quantiles = {q for e in exprs.values() for q in re.findall(r"histogram_quantile\(([\d.]+)", e)}
    assert quantiles == {"0.50", "0.95", "0.99"}


def test_the_overview_shows_everything_the_issue_asks_for() -> None:
    overview = load(OVERVIEW)
    queries = " ".join(t["expr"] for p in panels_of(overview) for t in p.get("targets", []))
    missing = {what for what, metric in REQUIRED_METRICS.items() if metric not in queries}
    assert not missing, f"no panel shows: {sorted(missing)}"


def test_the_dashboard_has_a_stable_identity(dashboard: dict[str, Any]) -> None:
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert dashboard["title"]
    assert "id" not in dashboard or dashboard["id"] is None  # Grafana assigns it


def _fixed_colours(panel: dict[str, Any]) -> dict[str, str]:
    """Series name -> fixed colour, from the panel's byName overrides."""
    return {
        o["matcher"]["options"]: p["value"]["fixedColor"]
        for o in panel["fieldConfig"]["overrides"]
        if o["matcher"]["id"] == "byName"
        for p in o["properties"]
        if p["id"] == "color" and p["value"].get("mode") == "fixed"
    }


def test_rejections_by_reason_name_every_reason_in_the_operator_dashboards_colours() -> None:
    """Issue 11: the door's reasons (unauthorized, duplicate_key, penalty_full) beside
    the limiter's, each in its own colour, the same as on the operator dashboard."""
    overview = load(OVERVIEW)
    (panel,) = [p for p in panels_of(overview) if p["title"].startswith("Rejections by reason")]
    (query,) = panel["targets"]
    assert query["legendFormat"] == "{{reason}}"
    assert re.search(r"sum by \(reason\) \(rate\(surgeguard_rejections_total\[", query["expr"])
    assert panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    colours = _fixed_colours(panel)
    assert colours == {reason: REASON_COLOURS[reason] for reason in REJECTION_REASONS}
    assert len(set(colours.values())) == len(colours)
    # The admitted-vs-rejected panel colours its rejections the same way.
    (mixed,) = [p for p in panels_of(overview) if p["title"] == "Admitted vs rejected by reason"]
    assert {
        name.removeprefix("rejected: "): colour
        for name, colour in _fixed_colours(mixed).items()
        if name.startswith("rejected: ")
    } == colours


def test_the_penalty_box_panel_shows_held_against_its_bound_and_holds_per_second() -> None:
    overview = load(OVERVIEW)
    (panel,) = [p for p in panels_of(overview) if p["title"].startswith("Penalty box")]
    exprs = {t["legendFormat"]: t["expr"] for t in panel["targets"]}
    assert exprs["{{replica}} held"].startswith("surgeguard_penalty_box_held ")
    assert exprs["{{replica}} bound"].startswith("surgeguard_penalty_box_max_held ")
    assert exprs["{{replica}} holds/s"].startswith(
        "rate(surgeguard_penalty_box_holds_total[$__rate_interval])"
    )
    assert all(re.search(r"\$\{?replica\b", e) for e in exprs.values())
    # holds/s on its own (right) axis: a rate, not a count of requests.
    right = [
        o
        for o in panel["fieldConfig"]["overrides"]
        if {"id": "custom.axisPlacement", "value": "right"} in o["properties"]
    ]
    assert [o["matcher"]["options"] for o in right] == [".* holds/s$"]
