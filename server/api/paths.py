"""The health endpoints' paths, which the HTTP adapter serves and the health probe asks
(a module of its own, so the probe imports no HTTP server to learn them)."""

LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"
