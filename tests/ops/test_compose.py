"""Issue 7: the container stack as files: docker-compose.yml, Dockerfile, .dockerignore and
nginx/nginx.conf. Issue 15: three replicas sharing one Postgres, one remote
recommendations and payments service and a db budget, found by their announcements.

No container runs here (the suite needs no Docker engine). What is checked is what breaks
a `docker compose up` silently or unsafely: an unpinned image, a service without a health
check, a SURGEGUARD_* variable the settings do not know (it would be ignored), a replica
listening on 127.0.0.1 inside its container, replicas not sharing one Redis, a controller
or load balancer that misses a replica, a secret with a default, a root container.
`docker compose config` validates the whole file where the docker compose CLI exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from surgeguard.cli.settings import StackSettings
from surgeguard.settings import ENV_PREFIX, SettingsError
from tests.ops.postgres_budget import RESERVE, db_budget, fits, max_connections
from tests.support.tools import NOT_POSSIBLE_HERE

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
NGINX_CONF = ROOT / "nginx" / "nginx.conf"
PROMETHEUS_YML = ROOT / "prometheus" / "prometheus.yml"
GRAFANA_DASHBOARD_PROVIDERS = ROOT / "grafana" / "provisioning" / "dashboards"

# Variables that must be given to `docker compose` (the file refuses to start without).
REQUIRED_VARIABLES = {
    "SURGEGUARD_ADMIN_TOKEN": "test-token",
    "GRAFANA_ADMIN_PASSWORD": "pw",
    "REDIS_PASSWORD": "redis-pw",
    "POSTGRES_PASSWORD": "postgres-pw",
}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


# -- reading the files ------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


def services() -> dict[str, dict[str, Any]]:
    found = compose().get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml has no services"
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or a list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [str(item).partition("=") for item in env]
        return {name: value for name, _, value in pairs}
    return {str(name): "" if value is None else str(value) for name, value in env.items()}


def resolve(value: str) -> str:
    """The value compose would use with nothing set but the required variables:
    ``${X:-default}`` gives its default, ``${X:?msg}`` the test value of X."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        if name in REQUIRED_VARIABLES:
            return REQUIRED_VARIABLES[name]
        if op in (":-", "-"):
            return arg
        return ""

    return INTERPOLATION.sub(one, value)


def surgeguard_services() -> dict[str, dict[str, Any]]:
    """Services that run the surgeguard command from the image built from ./Dockerfile
    (locust runs from the same image with its own entrypoint)."""
    return {
        name: svc for name, svc in services().items() if "build" in svc and "entrypoint" not in svc
    }


def test_locust_drives_the_load_balancer_with_the_projects_locustfile() -> None:
    locust = services()["locust"]
    assert locust["entrypoint"] == ["locust"] and "build" in locust
    cmd = command(locust)
    path = flag(cmd, "-f") or ""
    # The image installs the package into /opt/venv (python 3.11): the locustfile is there.
    assert path == "/opt/venv/lib/python3.11/site-packages/surgeguard_loadtest/load/locustfile.py"
    assert (ROOT / "loadtest" / "surgeguard_loadtest" / "load" / "locustfile.py").is_file()
    assert flag(cmd, "--host") == "http://nginx:8000"
    assert "8089" in healthcheck_text(locust)
    assert locust["depends_on"]["nginx"]["condition"] == "service_healthy"


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(part) for part in cmd]


def flag(cmd: list[str], name: str) -> str | None:
    for i, part in enumerate(cmd):
        if part == name and i + 1 < len(cmd):
            return cmd[i + 1]
        if part.startswith(f"{name}="):
            return part.split("=", 1)[1]
    return None


def image_service(prefix: str) -> tuple[str, dict[str, Any]]:
    """The one service whose image starts with ``prefix`` ("postgres:")."""
    found = [(n, s) for n, s in services().items() if str(s.get("image", "")).startswith(prefix)]
    assert len(found) == 1, f"expected one service running {prefix}..., got {found}"
    return found[0]


def remotes() -> dict[str, tuple[str, int]]:
    """Remote API name -> (service name, port it listens on)."""
    found = {}
    for name, svc in surgeguard_services().items():
        cmd = command(svc)
        if cmd[:1] == ["remote"]:
            assert cmd[1] not in found, f"two services run the remote {cmd[1]}"
            found[cmd[1]] = (name, int(flag(cmd, "--port") or 0))
    return found


def replicas() -> dict[str, int]:
    """Target replica service name -> port it listens on inside its container."""
    found = {}
    for name, svc in surgeguard_services().items():
        cmd = command(svc)
        if cmd and cmd[0] == "target":
            found[name] = int(flag(cmd, "--port") or 8000)
    return found


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(str(part) for part in test)


def image_tag(image: str) -> str | None:
    """The tag of ``name[:tag][@digest]`` (None when there is no tag)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else None


def is_pinned(image: str) -> bool:
    """A version tag (with a digit, not latest) or a digest."""
    tag = image_tag(image)
    if "@sha256:" in image:
        return tag != "latest"
    return tag is not None and tag != "latest" and any(ch.isdigit() for ch in tag)


def nginx_upstream_servers() -> list[str]:
    text = re.sub(r"#.*", "", NGINX_CONF.read_text())
    block = re.search(r"upstream\s+\S+\s*\{(?P<body>[^}]*)\}", text)
    assert block, "nginx.conf has no upstream block"
    return re.findall(r"^\s*server\s+(\S+?)(?:\s|;)", block.group("body"), re.MULTILINE)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


# -- docker-compose.yml -----------------------------------------------------------------


def test_every_service_is_built_here_or_runs_a_pinned_image() -> None:
    for name, svc in services().items():
        image = svc.get("image")
        if image is not None:
            assert is_pinned(str(image)) or "build" in svc, (
                f"service {name}: image {image!r} needs an explicit version tag (not latest)"
            )
            assert image_tag(str(image)) != "latest", f"service {name}: no :latest"
        else:
            assert "build" in svc, f"service {name} has neither build nor image"


def test_every_service_has_a_health_check() -> None:
    for name, svc in services().items():
        check = svc.get("healthcheck")
        assert isinstance(check, dict) and check.get("test"), f"service {name}: no healthcheck"
        assert not check.get("disable"), f"service {name}: healthcheck disabled"
        assert healthcheck_text(svc).strip() not in ("NONE", ""), f"service {name}"


def test_surgeguard_health_checks_probe_the_port_the_process_listens_on() -> None:
    port_flags = {
        "remote": "--port",
        "target": "--port",
        "controller": "--port",
        "worker": "--metrics-port",
        "dashboard": "--port",
    }
    defaults = {"target": 8000, "controller": 8001, "worker": 8002, "dashboard": 8501, "remote": 0}
    paths = {"dashboard": "/_stcore/health"}  # Streamlit's own health route
    for name, svc in surgeguard_services().items():
        cmd = command(svc)
        assert cmd and cmd[0] in port_flags, f"service {name}: unexpected command {cmd}"
        port = int(flag(cmd, port_flags[cmd[0]]) or defaults[cmd[0]])
        if cmd[0] == "target":
            # A replica's probe goes to its health port (a thread of its own): on the
            # service port a storm's connections would queue in front of it (issue 11).
            health_port = flag(cmd, "--health-port")
            assert health_port is not None, f"service {name}: no --health-port in {cmd}"
            port = int(health_port)
        text = healthcheck_text(svc)
        # slim images have no curl: the check is Python's urllib against /healthz.
        path = paths.get(cmd[0], "/healthz")
        assert f"http://127.0.0.1:{port}{path}" in text, f"service {name}: {text}"
        assert "urllib" in text, f"service {name}: health check must not need curl"


def test_surgeguard_variables_are_settings_fields() -> None:
    known = set(StackSettings.model_fields)
    used: dict[str, set[str]] = {}
    for name, svc in services().items():
        for variable in environment(svc):
            if variable.startswith(ENV_PREFIX):
                used.setdefault(variable, set()).add(name)
    # ...and every ${SURGEGUARD_*} the file interpolates, comments included.
    for match in INTERPOLATION.finditer(COMPOSE.read_text()):
        if match.group("name").startswith(ENV_PREFIX):
            used.setdefault(match.group("name"), set()).add("(interpolation)")
    assert used, "no SURGEGUARD_* variable at all: the stack cannot be configured"
    unknown = {
        variable: sorted(where)
        for variable, where in used.items()
        if variable.removeprefix(ENV_PREFIX).lower() not in known
    }
    assert not unknown, f"SURGEGUARD_* variables that the settings do not know: {unknown}"


def test_each_surgeguard_service_environment_is_valid_settings() -> None:
    """The values too, with defaults of ${X:-default} applied: what the process would get."""
    for name, svc in surgeguard_services().items():
        values: dict[str, Any] = {
            variable.removeprefix(ENV_PREFIX).lower(): resolve(value)
            for variable, value in environment(svc).items()
            if variable.startswith(ENV_PREFIX)
        }
        try:
            StackSettings.load(**values)
        except SettingsError as exc:
            pytest.fail(f"service {name}: {exc}")


def test_surgeguard_processes_share_one_redis_and_listen_beyond_loopback() -> None:
    redis_services = {n for n, s in services().items() if "redis" in str(s.get("image", ""))}
    assert len(redis_services) == 1, f"expected one redis service, got {redis_services}"
    (redis_service,) = redis_services
    urls = set()
    for name, svc in surgeguard_services().items():
        env = {k: resolve(v) for k, v in environment(svc).items()}
        if command(svc)[:1] == ["dashboard"]:
            # The dashboard holds no Redis connection: it reads and acts through the
            # controller's API only.
            assert flag(command(svc), "--controller") == "http://controller:8001", name
            assert env.get("SURGEGUARD_HOST") == "0.0.0.0", f"service {name}: SURGEGUARD_HOST"
            continue
        url = env.get("SURGEGUARD_REDIS_URL", "")
        # Unset would start an embedded Redis per container: no shared control plane.
        assert urlsplit(url).hostname == redis_service, f"service {name}: REDIS_URL {url!r}"
        urls.add(url)
        # 127.0.0.1 (the default) would pass the in-container health check and still be
        # unreachable for nginx, Prometheus and the controller.
        assert env.get("SURGEGUARD_HOST") == "0.0.0.0", f"service {name}: SURGEGUARD_HOST"
        assert "redis" in svc.get("depends_on", {}), f"service {name} must wait for redis"
    assert len(urls) == 1, f"all surgeguard processes must use the same Redis: {urls}"


def test_three_replicas_with_distinct_stable_ids() -> None:
    found = replicas()
    assert len(found) >= 3, f"expected at least three target replicas, got {sorted(found)}"
    ids = [environment(services()[name]).get("SURGEGUARD_REPLICA_ID", "") for name in found]
    assert all(ids), "every replica needs SURGEGUARD_REPLICA_ID (the control document key)"
    assert len(set(ids)) == len(ids), f"replica ids must differ: {ids}"


def test_replicas_name_clients_by_the_address_nginx_saw() -> None:
    """Issue 11: behind nginx's keep-alive pool one connection carries many clients, so
    the penalty box must tell them apart by the X-Real-IP nginx sets (test_nginx.py)."""
    for name in replicas():
        env = environment(services()[name])
        assert env.get("SURGEGUARD_CLIENT_ADDRESS_HEADER") == "x-real-ip", name
    settings = StackSettings.load(client_address_header="x-real-ip")
    assert settings.client_address_header.lower() == "x-real-ip"


def test_replicas_default_to_the_settings_client_keys_and_their_ceilings() -> None:
    """Issue 11: a key's ceiling is the highest priority it may use; the compose default
    must be the settings' own (the demo's keys critical), not a list of bare keys."""
    default = StackSettings.model_fields["client_keys"].default
    for name in replicas():
        keys = resolve(environment(services()[name])["SURGEGUARD_CLIENT_KEYS"])
        assert keys == default, name


def test_controller_finds_every_replica_by_its_announcement() -> None:
    """Issue 15: each replica announces the URL the controller scrapes, its own in-network
    address (never nginx's); a static list, if any, names only replicas."""
    controllers = [s for s in surgeguard_services().values() if command(s)[:1] == ["controller"]]
    assert len(controllers) == 1, "expected exactly one controller service"
    env = environment(controllers[0])
    advertised = {
        environment(services()[name]).get("SURGEGUARD_ADVERTISE_URL", ""): f"http://{name}:{port}"
        for name, port in replicas().items()
    }
    assert all(url == expected for url, expected in advertised.items()), advertised
    assert len(advertised) == len(replicas()), f"replicas announce the same URL: {advertised}"
    static = env.get("SURGEGUARD_CONTROLLER_TARGETS", "")
    targets = {t.strip().rstrip("/") for t in static.split(",") if t.strip()}
    assert targets <= set(advertised), f"static targets that are no replica: {targets}"
    assert env["SURGEGUARD_ADMIN_TOKEN"].startswith("${SURGEGUARD_ADMIN_TOKEN:?")
    assert set(replicas()) <= set(controllers[0]["depends_on"]), "start after the replicas"


def test_replicas_share_one_postgres_and_one_of_each_remote_service() -> None:
    """Issue 15: every replica's db is the one Postgres (with its password from the
    secret's variable), its recommendations and payments the remote services, and each
    waits for them to be healthy."""
    postgres_name, _ = image_service("postgres:")
    found = remotes()
    assert set(found) == {"recommendations", "payments"}, found
    for name in replicas():
        svc = services()[name]
        env = {k: resolve(v) for k, v in environment(svc).items()}
        url = urlsplit(env.get("SURGEGUARD_DATABASE_URL", ""))
        assert url.scheme == "postgresql" and url.hostname == postgres_name, f"{name}: {url}"
        assert url.password == REQUIRED_VARIABLES["POSTGRES_PASSWORD"], name
        assert (url.port, url.username, url.path) == (5432, "surgeguard", "/surgeguard"), name
        for remote, (service, port) in found.items():
            variable = f"SURGEGUARD_{remote.upper()}_URL"
            assert env.get(variable) == f"http://{service}:{port}", f"{name}: {variable}"
        for dependency in ("redis", postgres_name, *(s for s, _ in found.values())):
            assert dependency in svc["depends_on"], f"{name} must wait for {dependency}"
        assert db_budget(env["SURGEGUARD_BUDGETS"]) > 0, name
    budgets = {resolve(environment(services()[n])["SURGEGUARD_BUDGETS"]) for n in replicas()}
    assert len(budgets) == 1, f"the replicas must declare one budget: {budgets}"


def test_the_db_budget_fits_in_postgres_max_connections_less_the_reserve() -> None:
    _, postgres = image_service("postgres:")
    args = command(postgres)
    (budgets,) = {resolve(environment(services()[n])["SURGEGUARD_BUDGETS"]) for n in replicas()}
    assert fits(budgets, args), (db_budget(budgets), max_connections(args), RESERVE)


def test_postgres_persists_and_takes_its_password_from_a_secret() -> None:
    _, postgres = image_service("postgres:")
    assert is_pinned(str(postgres["image"]))
    assert compose()["secrets"]["postgres_password"] == {"environment": "POSTGRES_PASSWORD"}
    assert postgres.get("secrets") == ["postgres_password"]
    env = environment(postgres)
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in env  # the secret, not a value in the file
    assert (env["POSTGRES_USER"], env["POSTGRES_DB"]) == ("surgeguard", "surgeguard")
    named = set(compose().get("volumes") or {})
    mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in postgres.get("volumes", [])}
    assert any(m in named and p == "/var/lib/postgresql/data" for m, p in mounts.items())
    assert "pg_isready" in healthcheck_text(postgres)


def test_remote_services_follow_the_control_plane_chaos_and_listen_beyond_loopback() -> None:
    for service, port in remotes().values():
        env = {k: resolve(v) for k, v in environment(services()[service]).items()}
        assert env.get("SURGEGUARD_HOST") == "0.0.0.0", service
        assert urlsplit(env.get("SURGEGUARD_REDIS_URL", "")).hostname == "redis", service
        assert f"http://127.0.0.1:{port}/healthz" in healthcheck_text(services()[service])
        assert "ports" not in services()[service], f"{service}: not for outside the network"


def test_nginx_balances_over_every_replica() -> None:
    nginx = [s for s in services().values() if str(s.get("image", "")).startswith("nginx:")]
    assert len(nginx) == 1, "expected one nginx load balancer"
    mounts = [str(v) for v in nginx[0].get("volumes", [])]
    assert any(m.startswith("./nginx/nginx.conf:/etc/nginx/nginx.conf") for m in mounts), mounts
    assert any(str(p).endswith(":80") for p in nginx[0].get("ports", [])), "LB publishes :80"
    expected = {f"{name}:{port}" for name, port in replicas().items()}
    assert set(nginx_upstream_servers()) == expected


def test_start_order_waits_for_health() -> None:
    all_services = services()
    for name, svc in all_services.items():
        depends = svc.get("depends_on", {})
        assert isinstance(depends, dict), f"service {name}: depends_on needs conditions"
        for dependency, rule in depends.items():
            assert dependency in all_services, f"service {name}: unknown {dependency}"
            assert rule.get("condition") == "service_healthy", f"{name} -> {dependency}"
            assert "healthcheck" in all_services[dependency], f"{dependency} has no check"


def test_secrets_must_come_from_the_environment() -> None:
    all_services = services()
    text = COMPOSE.read_text()
    for variable in REQUIRED_VARIABLES:
        # ${X:?...}: compose refuses to start without it; no default secret.
        assert re.search(rf"\$\{{{variable}:\?", text), f"{variable} must use ${{X:?...}}"
        assert not re.search(rf"\$\{{{variable}:?-", text), f"{variable} must have no default"
    grafana = next(s for s in all_services.values() if "grafana/grafana" in str(s.get("image")))
    env = environment(grafana)
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_redis_persists_to_a_volume() -> None:
    redis_svc = next(s for s in services().values() if "redis" in str(s.get("image", "")))
    assert "--appendonly yes" in " ".join(command(redis_svc))
    named = set(compose().get("volumes") or {})
    assert any(str(v).split(":")[0] in named for v in redis_svc.get("volumes", []))


def test_redis_requires_a_password_from_a_secret() -> None:
    """Issue 13: Redis takes its password from a compose secret, and every process that
    talks to it carries that password in its URL."""
    redis_name, redis_svc = next(
        (n, s) for n, s in services().items() if "redis" in str(s.get("image", ""))
    )
    assert compose()["secrets"]["redis_password"] == {"environment": "REDIS_PASSWORD"}
    assert redis_svc.get("secrets") == ["redis_password"]
    started = " ".join(command(redis_svc))
    assert '--requirepass "$$(cat /run/secrets/redis_password)"' in started
    assert "docker-entrypoint.sh redis-server" in started  # still drops root
    assert "--maxmemory-policy noeviction" in started
    probe = " ".join(redis_svc["healthcheck"]["test"])
    assert "/run/secrets/redis_password" in probe  # an unauthenticated PING is refused
    for name, svc in surgeguard_services().items():
        url = resolve(environment(svc).get("SURGEGUARD_REDIS_URL", ""))
        if url:
            parts = urlsplit(url)
            assert parts.hostname == redis_name
            assert parts.password == REQUIRED_VARIABLES["REDIS_PASSWORD"], f"service {name}"


def test_redis_names_both_durability_settings() -> None:
    """What a 202 survives is a choice: the file says which it made and the other one."""
    text = COMPOSE.read_text()
    assert "--appendfsync everysec" in " ".join(
        command(next(s for s in services().values() if "redis" in str(s.get("image", ""))))
    )
    assert "`--appendfsync always`" in text


def test_prometheus_and_grafana_mount_their_provisioning() -> None:
    all_services = services()
    prom = next(s for s in all_services.values() if "prom/prometheus" in str(s.get("image")))
    assert any(str(v).startswith("./prometheus:/etc/prometheus") for v in prom["volumes"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in command(prom)
    assert any(part.startswith("--storage.tsdb.retention.time=") for part in command(prom))
    grafana = next(s for s in all_services.values() if "grafana/grafana" in str(s.get("image")))
    mounts = [str(v) for v in grafana["volumes"]]
    assert any(m.startswith("./grafana/provisioning:/etc/grafana/provisioning") for m in mounts)
    assert any(m.startswith("./grafana/dashboards:") for m in mounts)


def test_grafana_dashboard_provider_reads_where_compose_mounts_the_dashboards() -> None:
    providers = sorted(GRAFANA_DASHBOARD_PROVIDERS.glob("*.y*ml"))
    if not providers:
        pytest.skip(f"no dashboard provider in {GRAFANA_DASHBOARD_PROVIDERS}")
    grafana = next(s for s in services().values() if "grafana/grafana" in str(s.get("image")))
    mount = next(str(v) for v in grafana["volumes"] if str(v).startswith("./grafana/dashboards:"))
    target = mount.split(":")[1]
    paths = [
        p["options"]["path"]
        for f in providers
        for p in (yaml.safe_load(f.read_text()) or {}).get("providers", [])
        if p.get("type", "file") == "file"
    ]
    assert paths and all(path.rstrip("/") == target.rstrip("/") for path in paths), (
        f"provider paths {paths} vs compose mount {target}"
    )


def test_prometheus_scrapes_each_replica_under_the_controller_target_address() -> None:
    """With SURGEGUARD_PROMETHEUS_URL the controller finds a replica's series by the
    ``instance`` label, which must equal host:port of its target URL."""
    if not PROMETHEUS_YML.exists():
        pytest.skip(f"{PROMETHEUS_YML} not there")
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    scraped = {
        str(target)
        for job in config.get("scrape_configs", [])
        if not job.get("relabel_configs")
        for static in job.get("static_configs", [])
        for target in static.get("targets", [])
    }
    for name, port in replicas().items():
        assert f"{name}:{port}" in scraped, f"Prometheus does not scrape {name}:{port}"


# -- Dockerfile and .dockerignore -------------------------------------------------------


def test_dockerfile_base_images_are_pinned() -> None:
    stages: set[str] = set()
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert froms, "Dockerfile has no FROM"
    for args in froms:
        words = [w for w in args.split() if not w.startswith("--platform")]
        image = words[0]
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        if image.lower() in stages:
            continue  # FROM an earlier stage
        assert is_pinned(image), f"FROM {image}: pin a version tag (not latest)"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args for keyword, args in dockerfile_instructions() if keyword == "USER"]
    assert users, "Dockerfile has no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]} is root"


def test_dockerfile_bakes_in_no_secret_and_no_test_dependencies() -> None:
    for keyword, args in dockerfile_instructions():
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"TOKEN|PASSWORD|SECRET|API_KEY", args, re.I), args
        if keyword == "RUN" and "pip install" in args:
            assert "[test]" not in args and "-e " not in args, args
    installs = [a for k, a in dockerfile_instructions() if k == "RUN" and "pip install" in a]
    assert installs and all("--no-cache-dir" in a for a in installs), installs


def test_dockerignore_lets_in_what_the_dockerfile_copies_and_nothing_else() -> None:
    rules = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert rules[0] == "*", ".dockerignore should start from nothing (an allow-list)"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copied: set[str] = set()
    for keyword, args in dockerfile_instructions():
        if keyword in ("COPY", "ADD") and "--from=" not in args:
            sources = [w for w in args.split() if not w.startswith("--")][:-1]
            copied.update(s.rstrip("/") for s in sources)
    assert copied, "Dockerfile copies nothing from the context"
    assert copied <= allowed, f"copied but ignored: {sorted(copied - allowed)}"
    for secret in (".env", ".git", ".venv", ".surgeguard"):
        assert secret not in allowed, f"{secret} must stay out of the build context"


# -- docker compose itself, where it exists ---------------------------------------------


def docker_compose_available() -> str | None:
    """None when `docker compose` works here, else why it does not."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker compose version` failed: {exc}"
    if probe.returncode != 0:
        detail = (probe.stderr or probe.stdout).strip().splitlines()
        return f"the docker compose plugin is not installed ({detail[0] if detail else ''})"
    return None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    missing = docker_compose_available()
    if missing:
        pytest.skip(f"{NOT_POSSIBLE_HERE} `docker compose config` cannot run: {missing}")
    # An empty --env-file: a developer's .env must not decide the outcome.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    base = ["docker", "compose", "--env-file", str(empty), "-f", str(COMPOSE), "config", "-q"]
    env = {**os.environ, **REQUIRED_VARIABLES}
    result = subprocess.run(
        base,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # ...and without the secrets it must refuse, naming them.
    bare = {k: v for k, v in os.environ.items() if k not in REQUIRED_VARIABLES}
    refused = subprocess.run(
        base,
        cwd=ROOT,
        env=bare,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert any(name in refused.stderr for name in REQUIRED_VARIABLES), refused.stderr
