"""Benchmarks: each script prints one JSON object (see the README's Benchmarks section).

Ray reads ``RAY_AUTH_MODE`` once, when a process first imports it, and the benchmarks start
token-authenticated local clusters: the default is set here, before any benchmark imports Ray.
"""

import os

os.environ.setdefault("RAY_AUTH_MODE", "token")
