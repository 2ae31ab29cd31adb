"""Parts a test needs from outside the repository, and what happens when one is missing.

Locally a missing part (the real data under ../shared, Debian's chromium or prometheus, the
vendored CRD schemas, free default ports) skips the tests that need it, with the reason. CI names the parts
it has in ``RAYESTATE_REQUIRE`` (comma-separated, e.g. ``data,browser,schemas,ports``; ``all``
for every one): for those, "missing" is a failure, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os

import pytest

PARTS = ("data", "browser", "schemas", "ports", "prometheus")


def required() -> set[str]:
    """The parts the environment promises (RAYESTATE_REQUIRE); unknown names are an error."""
    names = {p.strip() for p in os.environ.get("RAYESTATE_REQUIRE", "").split(",") if p.strip()}
    if "all" in names:
        return set(PARTS)
    unknown = names - set(PARTS)
    if unknown:
        raise ValueError(f"RAYESTATE_REQUIRE names unknown part(s) {sorted(unknown)}; known: {', '.join(PARTS)}")
    return names


def missing(part: str, reason: str):
    """Skip (the part is optional here) or fail (RAYESTATE_REQUIRE promises it) with ``reason``."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}")
    if part in required():
        pytest.fail(f"required part {part!r} is missing: {reason}", pytrace=False)
    pytest.skip(f"{part} not available: {reason}")
