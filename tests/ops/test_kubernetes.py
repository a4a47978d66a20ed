"""Issue 15: the Kubernetes manifests in deploy/kubernetes/, checked offline.

Every document is validated against the Kubernetes JSON schemas that the
``kubernetes-validate`` package bundles (strict: an unknown or misspelt field fails
too), with no cluster and no network. Then what a schema cannot see: every container
probed and bounded, exactly one controller, no secret value written into a workload,
replicas that announce their own pod IP, a db budget Postgres can honour, and only
setting names the processes know (an unknown ``SURGEGUARD_*`` would be ignored).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from surgeguard.cli.settings import StackSettings
from surgeguard.settings import ENV_PREFIX, SettingsError
from surgeguard_controller.settings import ControllerSettings
from tests.ops.postgres_budget import RESERVE, db_budget, fits, max_connections

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = MANIFESTS / "kustomization.yaml"
README = MANIFESTS / "README.md"
# The oldest Kubernetes the manifests claim to work on (autoscaling/v2 and policy/v1 are
# there since 1.23 and 1.21).
KUBERNETES_VERSION = "1.29"
WORKLOADS = ("Deployment", "StatefulSet")
# $(NAME): Kubernetes' own expansion of an earlier env entry ($$ escapes it).
REFERENCE = re.compile(r"(?<!\$)\$\((?P<name>[A-Za-z_][A-Za-z0-9_]*)\)")
SECRETISH = re.compile(r"TOKEN|PASSWORD|SECRET|API_KEY", re.I)


# -- reading the files ------------------------------------------------------------------


def listed_files() -> list[Path]:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    return [MANIFESTS / name for name in kustomization["resources"]]


@cache  # read once per session; no test changes a document (the broken one is a copy)
def documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every document of every file the kustomization lists."""
    found = []
    for path in listed_files():
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                assert isinstance(document, dict), f"{path.name}: a document is not a mapping"
                found.append((path.name, document))
    return found


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in documents() if d["kind"] == kind]


def of_kind_named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    return found


def workloads() -> list[dict[str, Any]]:
    return [d for _, d in documents() if d["kind"] in WORKLOADS]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = workload["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def surgeguard_workloads(command: str) -> list[dict[str, Any]]:
    """Workloads whose first container runs ``surgeguard <command>``."""
    return [
        w
        for w in workloads()
        if containers(w)[0]["image"].split(":")[0] == "surgeguard"
        and containers(w)[0].get("args", [])[:1] == [command]
    ]


def one(command: str) -> dict[str, Any]:
    found = surgeguard_workloads(command)
    assert len(found) == 1, f"expected one workload running `surgeguard {command}`: {found}"
    return found[0]


def config_map() -> dict[str, str]:
    settings = of_kind_named("ConfigMap", "surgeguard-settings")
    return {str(k): str(v) for k, v in settings["data"].items()}


def secret_values() -> set[str]:
    values = set()
    for secret in of_kind("Secret"):
        values.update(str(v) for v in (secret.get("stringData") or {}).values() if v)
        values.update(str(v) for v in (secret.get("data") or {}).values() if v)
    return values


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def flag(args: list[str], name: str) -> str | None:
    for i, part in enumerate(args):
        if part == name and i + 1 < len(args):
            return args[i + 1]
    return None


def expanded(container: dict[str, Any], samples: dict[str, str]) -> dict[str, str]:
    """The container's SURGEGUARD_* environment as the process gets it: the ConfigMap it
    loads, then its env (which wins), $(NAME) replaced by ``samples`` (secret and
    downward API values) or an earlier entry."""
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == "surgeguard-settings"
            values.update(config_map())
    for name, entry in env_of(container).items():
        if "value" in entry:
            text = REFERENCE.sub(
                lambda m: values.get(m["name"], samples[m["name"]]), entry["value"]
            )
            values[name] = text
        else:
            values[name] = samples.get(name, f"sample-{name.lower()}")
    return {k: v for k, v in values.items() if k.startswith(ENV_PREFIX)}


# -- the files --------------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_and_pins_the_image() -> None:
    listed = {path.name for path in listed_files()}
    present = {p.name for p in MANIFESTS.glob("*.y*ml")} - {KUSTOMIZATION.name}
    assert listed == present, f"listed but absent / present but not listed: {listed ^ present}"
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    images = {image["name"]: image for image in kustomization["images"]}
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(images["surgeguard"]["newTag"]))
    for workload in workloads():
        for container in containers(workload):
            image = container["image"]
            if image == "surgeguard":  # tagged by the kustomization
                continue
            tag = image.rsplit(":", 1)[1] if ":" in image else ""
            assert re.search(r"\d", tag) and tag != "latest", f"{image}: pin a version"


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    """Strict: a misspelt field (readinesProbe) is an error, not a field Kubernetes drops."""
    problems = []
    for name, document in documents():
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            problems.append(f"{name} {document.get('kind')}: {where}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_the_validation_catches_a_broken_manifest() -> None:
    """The check above is not vacuous: a misspelt probe and a wrong type both fail."""
    (replicas,) = surgeguard_workloads("target")
    broken = yaml.safe_load(yaml.safe_dump(replicas))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_container_has_probes_and_bounded_resources() -> None:
    for workload in workloads():
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert container.get("readinessProbe"), f"{where}: no readinessProbe"
            assert container.get("livenessProbe"), f"{where}: no livenessProbe"
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{where}: {bound}"


def test_surgeguard_probes_ask_the_port_the_process_listens_on() -> None:
    flags = {"target": "--port", "controller": "--port", "worker": "--metrics-port"}
    for command, port_flag in flags.items():
        for workload in surgeguard_workloads(command):
            container = containers(workload)[0]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            port = int(flag(container["args"], port_flag) or 0)
            for probe in ("readinessProbe", "livenessProbe"):
                get = container[probe]["httpGet"]
                number = ports.get(get["port"], get["port"])
                if command == "target" and probe == "livenessProbe":
                    # The health port: a thread of its own, never behind a storm's accept
                    # queue (issue 11).
                    port = int(flag(container["args"], "--health-port") or 0)
                assert number == port, f"{command} {probe}: port {get['port']} is not {port}"


def test_the_replicas_probe_readyz_and_healthz_and_announce_their_pod_ip() -> None:
    replicas = one("target")
    assert replicas["kind"] == "Deployment" and replicas["spec"]["replicas"] == 3
    container = containers(replicas)[0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = env_of(container)
    names = list(env)
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    port = flag(container["args"], "--port")
    assert env["SURGEGUARD_ADVERTISE_URL"]["value"] == f"http://$(POD_IP):{port}"
    # $(NAME) is expanded only from entries listed before it.
    assert names.index("POD_IP") < names.index("SURGEGUARD_ADVERTISE_URL")
    assert env["SURGEGUARD_REPLICA_ID"]["value"] == "$(POD_NAME)"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # Discovery, not a list: the controller is given no targets.
    assert config_map()["SURGEGUARD_CONTROLLER_TARGETS"] == ""


def test_exactly_one_controller_and_its_service() -> None:
    controllers = surgeguard_workloads("controller")
    assert len(controllers) == 1, "expected exactly one controller workload"
    (controller,) = controllers
    assert controller["kind"] == "Deployment"
    assert controller["spec"]["replicas"] == 1
    # Recreate: the old pod is gone before the new one starts (a rolling update would
    # run two controllers side by side).
    assert controller["spec"]["strategy"] == {"type": "Recreate"}
    labels = controller["spec"]["template"]["metadata"]["labels"]
    autoscaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind("HorizontalPodAutoscaler")}
    assert controller["metadata"]["name"] not in autoscaled
    services = [s for s in of_kind("Service") if s["spec"]["selector"].items() <= labels.items()]
    assert [p["port"] for s in services for p in s["spec"]["ports"]] == [8001]
    (dashboard,) = surgeguard_workloads("dashboard")
    args = containers(dashboard)[0]["args"]
    assert flag(args, "--controller") == f"http://{services[0]['metadata']['name']}:8001"


def test_every_workload_has_a_service_named_as_the_others_call_it() -> None:
    """The names in the URLs (redis, postgres, recommendations, payments, the controller)
    are Services that select a workload listening on that port."""
    settings = config_map()
    wanted = {
        "recommendations": int(settings["SURGEGUARD_RECOMMENDATIONS_URL"].rsplit(":", 1)[1]),
        "payments": int(settings["SURGEGUARD_PAYMENTS_URL"].rsplit(":", 1)[1]),
        "redis": 6379,
        "postgres": 5432,
    }
    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    for name, port in wanted.items():
        assert name in services, f"no Service {name}"
        service = services[name]
        assert [p["port"] for p in service["spec"]["ports"]] == [port], name
        selected = [
            w
            for w in workloads()
            if service["spec"]["selector"].items()
            <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"Service {name} selects {len(selected)} workloads"
        listening = [p["containerPort"] for c in containers(selected[0]) for p in c["ports"]]
        assert port in listening, f"Service {name}: no container listens on {port}"
    for name in ("recommendations", "payments"):
        (workload,) = [
            w for w in surgeguard_workloads("remote") if containers(w)[0]["args"][1] == name
        ]
        args = containers(workload)[0]["args"]
        assert int(flag(args, "--port") or 0) == wanted[name], name


def test_redis_and_postgres_are_stateful_sets_with_volumes() -> None:
    for name, image, mount in (
        ("redis", "redis:", "/data"),
        ("postgres", "postgres:", "/var/lib/postgresql/data"),
    ):
        (workload,) = [w for w in of_kind("StatefulSet") if w["metadata"]["name"] == name]
        container = containers(workload)[0]
        assert container["image"].startswith(image), container["image"]
        claims = {c["metadata"]["name"] for c in workload["spec"]["volumeClaimTemplates"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts.keys() & claims, f"{name}: the volume claim is not mounted"
        assert mount in mounts.values(), f"{name}: data is not on the volume"
    redis_args = " ".join(containers(of_kind_named("StatefulSet", "redis"))[0]["command"])
    assert '--requirepass "$REDIS_PASSWORD"' in redis_args
    assert "--appendonly yes" in redis_args and "--maxmemory-policy noeviction" in redis_args


def test_the_db_budget_fits_in_postgres_max_connections_less_the_reserve() -> None:
    budgets = config_map()["SURGEGUARD_BUDGETS"]
    args = containers(of_kind_named("StatefulSet", "postgres"))[0]["args"]
    assert fits(budgets, args), (db_budget(budgets), max_connections(args), RESERVE)
    assert not fits(budgets, ["-c", f"max_connections={db_budget(budgets) + RESERVE - 1}"])


def test_no_secret_value_is_written_into_a_workload_or_the_config_map() -> None:
    values = secret_values()
    assert values, "no Secret holds a value"
    secrets = {s["metadata"]["name"]: s for s in of_kind("Secret")}
    for workload in workloads():
        text = yaml.safe_dump(workload)
        for value in values:
            assert value not in text, f"{workload['metadata']['name']} inlines a secret value"
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            env = env_of(container)
            for name, entry in env.items():
                if SECRETISH.search(name) and not name.endswith("_FILE"):
                    ref = entry.get("valueFrom", {}).get("secretKeyRef")
                    assert ref, f"{where}: {name} must come from a Secret"
                    keys = {**secrets[ref["name"]].get("stringData", {})}
                    assert ref["key"] in keys, f"{where}: {name}: no key {ref['key']}"
                value = str(entry.get("value", ""))
                password = re.search(r"://[^/@]*:(?P<pw>[^@/]+)@", value)
                if password:  # a URL with a password: only a reference to a Secret's
                    referenced = REFERENCE.fullmatch(password["pw"])
                    assert referenced, f"{where}: {name} writes a password into its URL"
                    source = env[referenced["name"]].get("valueFrom", {})
                    assert "secretKeyRef" in source, f"{where}: {name}: not from a Secret"
    for key, value in config_map().items():
        assert not SECRETISH.search(key), f"ConfigMap: {key} belongs in a Secret"
        assert not re.search(r"://[^/@]*:[^@/]+@", value), f"ConfigMap: {key} has a password"
    # Placeholders that say so, and the README says to replace them.
    assert all("REPLACE" in v for v in values), "a Secret's placeholder must say REPLACE"
    assert "REPLACE" in README.read_text()


def test_the_controller_refuses_to_start_with_the_placeholder_admin_token(
    tmp_path: Path,
) -> None:
    """Applied unchanged, the stack must not run with a token anyone can read here."""
    placeholder = of_kind_named("Secret", "surgeguard-admin")["stringData"]["admin-token"]
    (tmp_path / "admin-token").write_text(placeholder)
    (tmp_path / "operators").write_text("")
    settings = ControllerSettings.load(
        admin_token_file=tmp_path / "admin-token", admin_tokens_file=tmp_path / "operators"
    )
    with pytest.raises(SettingsError, match="at least 24 are required"):
        settings.operator_tokens()


def test_the_token_files_the_controller_reads_are_the_mounted_secret() -> None:
    container = containers(one("controller"))[0]
    env = env_of(container)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in one("controller")["spec"]["template"]["spec"]["volumes"]}
    for name in ("SURGEGUARD_ADMIN_TOKEN_FILE", "SURGEGUARD_ADMIN_TOKENS_FILE"):
        path = Path(env[name]["value"])
        (volume,) = [v for v, m in mounts.items() if Path(m) == path.parent]
        secret = of_kind_named("Secret", volumes[volume]["secret"]["secretName"])
        assert path.name in secret["stringData"], f"{name}: no key {path.name}"


def test_every_surgeguard_process_gets_the_shared_stores() -> None:
    """Every replica the same Redis and Postgres, the remote services and the budget; the
    worker and controller the same Redis; all of them by the Service names."""
    urls = set()
    for command in ("target", "worker", "controller", "remote"):
        for workload in surgeguard_workloads(command):
            container = containers(workload)[0]
            values = expanded(container, samples())
            urls.add(values["SURGEGUARD_REDIS_URL"])
            assert values["SURGEGUARD_HOST"] == "0.0.0.0", workload["metadata"]["name"]
            if command == "target":
                assert values["SURGEGUARD_DATABASE_URL"].startswith(
                    "postgresql://surgeguard:sample-postgres-password@postgres:5432/"
                )
                assert values["SURGEGUARD_RECOMMENDATIONS_URL"] == "http://recommendations:8003"
                assert values["SURGEGUARD_PAYMENTS_URL"] == "http://payments:8004"
                assert values["SURGEGUARD_BUDGETS"].startswith("db:")
    assert urls == {"redis://:sample-redis-password@redis:6379/0"}


def samples() -> dict[str, str]:
    return {
        "POD_NAME": "surgeguard-target-5d9c-abcde",
        "POD_IP": "10.1.2.3",
        "REDIS_PASSWORD": "sample-redis-password",
        "POSTGRES_PASSWORD": "sample-postgres-password",
    }


def surgeguard_environments() -> Iterator[tuple[str, dict[str, str]]]:
    for workload in workloads():
        for container in containers(workload):
            if container["image"] == "surgeguard":
                yield (
                    f"{workload['metadata']['name']}/{container['name']}",
                    expanded(container, samples()),
                )


def test_surgeguard_variables_are_settings_fields_with_valid_values() -> None:
    known = set(StackSettings.model_fields)
    for where, values in surgeguard_environments():
        unknown = sorted(v for v in values if v.removeprefix(ENV_PREFIX).lower() not in known)
        assert not unknown, f"{where}: SURGEGUARD_* variables the settings do not know: {unknown}"
        fields = {
            k.removeprefix(ENV_PREFIX).lower(): v
            for k, v in values.items()
            if not k.endswith("_FILE")  # the token files exist only in the pod
        }
        try:
            StackSettings.load(**fields)
        except SettingsError as exc:
            pytest.fail(f"{where}: {exc}")


def test_the_autoscaler_scales_the_replicas_on_a_pods_metric_the_readme_explains() -> None:
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", one("target")["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= one("target")["spec"]["replicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    hpa_text = (MANIFESTS / "hpa.yaml").read_text()
    # The adapter rule it assumes is written beside it, from the replicas' own metric.
    assert f"as: {name}" in hpa_text and "surgeguard_rejections_total" in hpa_text
    (pdb,) = of_kind("PodDisruptionBudget")
    labels = one("target")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 0 < pdb["spec"]["minAvailable"] < one("target")["spec"]["replicas"]
