"""A real Prometheus for tests (Debian's package); tests skip where it is absent."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.processes import child, free_port

PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the prometheus binary is not installed (CI installs Debian's prometheus package)",
)


def scrape_config(targets: Sequence[str], interval_s: float = 1.0) -> str:
    """A minimal prometheus.yml scraping ``targets`` (host:port) as job ``surgeguard``."""
    listed = ", ".join(f"'{t}'" for t in targets)
    return (
        f"global:\n  scrape_interval: {interval_s:g}s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: surgeguard\n    static_configs:\n"
        f"      - targets: [{listed}]\n"
    )


@contextmanager
def prometheus(config_text: str, work: Path, port: int | None = None) -> Iterator[str]:
    """Run Prometheus with ``config_text`` until the block ends; yields its URL.
    Its first scrape comes ~5 s after start (target discovery). ``port``: where it
    listens (default: a free one), for a process that must know it first."""
    assert PROMETHEUS is not None
    work.mkdir(parents=True, exist_ok=True)
    config = work / "prometheus.yml"
    config.write_text(config_text)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with child(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        health_url=f"{url}/-/ready",
        timeout_s=20,
    ):
        yield url
