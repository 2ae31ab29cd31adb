"""Reading what a pipeline run printed."""

from __future__ import annotations

import contextlib
import json


def last_json_line(output: str) -> dict:
    """The last line of a job's output that is a JSON object (Ray interleaves worker log lines)."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)
    raise AssertionError(f"no JSON summary line in the output:\n{output[-3000:]}")
