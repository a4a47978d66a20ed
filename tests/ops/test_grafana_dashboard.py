"""Issues 7, 11 and 16: the Grafana provisioning, the overview dashboard (with the
penalty box and rejections by reason) and one dashboard per concern (admission,
controller decisions, dependencies, jobs), each with the same annotations (controller
cuts, modes, the controller's mode switches, drills), read as files.

Whether every query and every annotation of the dashboards returns data is proven
against a real Prometheus in test_prometheus_rules.py; here: the JSON is one Grafana
loads and lays out as meant, and it is wired to the provisioned datasource.
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

from surgeguard.reasons import REJECTION_REASONS
from surgeguard_dashboard.door import REASON_COLOURS

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
OVERVIEW = GRAFANA / "dashboards" / "surgeguard-overview.json"
ADMISSION = GRAFANA / "dashboards" / "surgeguard-admission.json"
CONTROLLER = GRAFANA / "dashboards" / "surgeguard-controller.json"
DEPENDENCIES = GRAFANA / "dashboards" / "surgeguard-dependencies.json"
JOBS = GRAFANA / "dashboards" / "surgeguard-jobs.json"
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


# --- issue 16: a dashboard per concern, and the same marks on all of them ------------------

# What each concern's dashboard must show, as the metrics its queries read.
CONCERNS: dict[Path, dict[str, str]] = {
    ADMISSION: {
        "rejections by reason": "surgeguard_rejections_total",
        "penalty box held": "surgeguard_penalty_box_held",
        "penalty box holds": "surgeguard_penalty_box_holds_total",
        "concurrency limit": "surgeguard_concurrency_limit",
        "in flight": "surgeguard_inflight",
        "queue depth": "surgeguard_queue_depth",
        "shed threshold": "surgeguard_queue_limit",
        "queue wait": "surgeguard_queue_wait_seconds_bucket",
        "admitted latency": "surgeguard_request_duration_seconds_bucket",
    },
    CONTROLLER: {
        "decisions": "surgeguard_controller_decisions_total",
        "knobs it set": "surgeguard_controller_knob",
        "the p99 it steers by": "surgeguard_controller_p99_seconds",
        "its tick": "surgeguard_controller_tick_seconds_bucket",
        "replicas it cannot read": "surgeguard_controller_replica_stale",
        # issue 16: a controller that knows when it is not obeyed or not working
        "replicas not applying its decisions": "surgeguard_controller_replica_obeying",
        "failed ticks": "surgeguard_controller_tick_failures_total",
    },
    DEPENDENCIES: {
        "in flight": "surgeguard_dependency_inflight",
        "bulkhead limit": "surgeguard_dependency_limit",
        "waiting": "surgeguard_dependency_waiting",
        "latency": "surgeguard_dependency_duration_seconds_bucket",
        "bulkhead rejections": "surgeguard_dependency_rejections_total",
        "bulkhead knobs": "surgeguard_controller_knob",
    },
    JOBS: {
        "backlog": "surgeguard_jobs_pending",
        "backlog limit": "surgeguard_jobs_backlog_limit",
        "lag": "surgeguard_jobs_oldest_pending_age_seconds",
        "done": "surgeguard_jobs_processed_total",
        "failed": "surgeguard_jobs_failed_total",
        "dead": "surgeguard_jobs_dead_total",
        "dead letters waiting": "surgeguard_jobs_dead_letters",
        "worker concurrency": "surgeguard_worker_concurrency_in_use",
    },
}


def annotations_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's own annotation queries (Grafana's built-in one aside)."""
    return [a for a in dashboard["annotations"]["list"] if not a.get("builtIn")]


def kept_labels(expr: str) -> set[str]:
    """Labels an aggregated expression keeps: those of its outermost ``by (...)``."""
    match = re.match(r"\s*\w+ by \(([^)]*)\)", expr)
    assert match, f"an annotation aggregates with `by (...)`: {expr}"
    return {label.strip() for label in match.group(1).split(",")}


def test_each_concern_has_a_dashboard_that_shows_what_it_asks_for() -> None:
    assert set(CONCERNS) | {OVERVIEW} == set(DASHBOARDS)
    for path, required in CONCERNS.items():
        queries = " ".join(t["expr"] for p in panels_of(load(path)) for t in p.get("targets", []))
        missing = {what for what, metric in required.items() if metric not in queries}
        assert not missing, f"{path.name} shows no {sorted(missing)}"


def test_every_dashboard_links_to_the_others_and_has_a_distinct_identity() -> None:
    uids, titles = set(), set()
    for path in DASHBOARDS:
        dashboard = load(path)
        assert "surgeguard" in dashboard["tags"], path.name
        # One dropdown of every dashboard tagged surgeguard, keeping time and variables.
        (link,) = dashboard["links"]
        assert link["type"] == "dashboards" and link["tags"] == ["surgeguard"], path.name
        assert link["keepTime"] and link["includeVars"], path.name
        uids.add(dashboard["uid"])
        titles.add(dashboard["title"])
        assert path.stem == dashboard["uid"], "file name and uid agree"
    assert len(uids) == len(titles) == len(DASHBOARDS)


def test_every_dashboard_marks_cuts_modes_and_drills_the_same_way() -> None:
    """The same annotation queries on every dashboard, so a cut or a drill sits at the
    same moment on every chart an operator opens."""
    marks = [annotations_of(load(path)) for path in DASHBOARDS]
    assert all(m == marks[0] for m in marks), "every dashboard has the same annotations"
    by_name = {a["name"]: a for a in marks[0]}
    assert 'action="cut"' in by_name["Controller cuts"]["expr"]
    assert "surgeguard_controller_decisions_total" in by_name["Controller cuts"]["expr"]
    assert "surgeguard_mode_active" in by_name["Modes on"]["expr"]
    assert (
        "surgeguard_controller_mode_switches_total" in by_name["Controller mode switches"]["expr"]
    )
    assert "drill" in by_name["Drills"]["expr"]
    colours = [a["iconColor"] for a in marks[0]]
    assert len(set(colours)) == len(colours), f"one colour per kind of mark: {colours}"


def test_annotations_use_the_datasource_and_name_only_labels_they_keep() -> None:
    uid = provisioned_uid()
    for annotation in annotations_of(load(OVERVIEW)):
        name = annotation["name"]
        assert annotation["datasource"] == {"type": "prometheus", "uid": uid}, name
        assert annotation["enable"] is True and annotation["hide"] is False, name
        # Grafana's Prometheus annotation fields (it reads the legacy top-level form).
        assert annotation["useValueForTime"] is False, name
        kept = kept_labels(annotation["expr"])
        titled = set(re.findall(r"\{\{(\w+)\}\}", annotation["titleFormat"]))
        texted = set(re.findall(r"\{\{(\w+)\}\}", annotation.get("textFormat", "")))
        tags = {t.strip() for t in annotation["tagKeys"].split(",")}
        assert titled and titled <= kept, (name, titled, kept)
        assert texted <= kept and tags <= kept, (name, texted, tags, kept)
        # A mark only where something happened: the query keeps positive values only.
        assert re.search(r"(> 0|== 1)$", annotation["expr"]), name


@pytest.mark.parametrize("path", [OVERVIEW, ADMISSION], ids=lambda p: p.name)
def test_rejections_by_reason_keep_the_operator_dashboards_colours(path: Path) -> None:
    (panel,) = [p for p in panels_of(load(path)) if p["title"].startswith("Rejections by reason")]
    assert _fixed_colours(panel) == {reason: REASON_COLOURS[reason] for reason in REJECTION_REASONS}


@pytest.mark.parametrize("path", [ADMISSION, CONTROLLER], ids=lambda p: p.name)
def test_latency_against_the_slo_draws_the_slo_line(path: Path) -> None:
    for panel in panels_of(load(path)):
        exprs = {t["legendFormat"]: t["expr"] for t in panel.get("targets", [])}
        if "SLO 250 ms" not in exprs:
            continue
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] == "s", panel["title"]
        assert defaults["custom"]["thresholdsStyle"]["mode"] == "line", panel["title"]
        assert SLO_S in [step["value"] for step in defaults["thresholds"]["steps"]]
        assert exprs["SLO 250 ms"] == f"vector({SLO_S})"
        break
    else:
        pytest.fail(f"{path.name} draws no latency against the SLO")


def test_per_replica_and_per_dependency_panels_follow_their_variables() -> None:
    for path in DASHBOARDS:
        dashboard = load(path)
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        for panel in panels_of(dashboard):
            exprs = " ".join(t["expr"] for t in panel.get("targets", []))
            uses_replica = "{{replica}}" in " ".join(
                t.get("legendFormat", "") for t in panel.get("targets", [])
            )
            if uses_replica:
                assert re.search(r"\$\{?replica\b", exprs), (path.name, panel["title"])
            for name in re.findall(r"\$\{?(\w+)", exprs):
                if not name.startswith("__"):
                    assert name in variables, (path.name, panel["title"], name)
        if "dependency" in variables:
            dependency = variables["dependency"]
            assert (
                dependency["definition"] == "label_values(surgeguard_dependency_limit, dependency)"
            )
            assert dependency["multi"] and dependency["includeAll"]
            assert dependency["allValue"] == ".*"
