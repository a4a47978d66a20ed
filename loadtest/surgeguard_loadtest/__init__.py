"""Load generators and micro-benchmarks that drive the demo service on loopback."""

from surgeguard.extras import require

require("surgeguard_loadtest", "loadtest", "locust", "plotly", "httpx", "redis")
