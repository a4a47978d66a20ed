"""The feedback controller: signals from metrics, limit algorithms, the loop, its API."""

from surgeguard.extras import require

require("surgeguard_controller", "controller", "fastapi", "uvicorn", "httpx", "redis")
