"""Environment the Ray cluster (head and workers) should run with for serving.

Serve reads these when its controller, proxies and replicas start, so they belong on the
process that starts Ray (`ray start`, the KubeRay head/worker containers), not in the app.
"""

SERVE_RAY_ENV: dict[str, str] = {}
