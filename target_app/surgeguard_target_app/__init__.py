"""The demo service built on surgeguard: routes, simulated dependencies, worker."""

from surgeguard.extras import require

require("surgeguard_target_app", "demo", "fastapi", "uvicorn", "redis")
