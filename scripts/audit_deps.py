"""Audit the locked runtime dependencies (docker/constraints.txt) with pip-audit.

    python scripts/audit_deps.py            # what CI runs
    python scripts/audit_deps.py --json     # the full pip-audit report

Exit codes: 0 no known vulnerability (other than accepted ones), 1 vulnerabilities found,
3 the advisory service could not be reached (no verdict; CI treats that as a failure, the
offline test suite skips). Accepted advisories live in docker/audit-accepted.txt, one ID per
line with the reason as a comment; an entry there needs a reason, and one that no longer
matches anything is reported so the file does not rot.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "docker" / "constraints.txt"
ACCEPTED = REPO / "docker" / "audit-accepted.txt"
UNREACHABLE = 3


def accepted_ids(path: Path = ACCEPTED) -> dict[str, str]:
    """Accepted advisory id -> reason. A line without a reason is an error: say why or fix it."""
    accepted = {}
    for number, line in enumerate(path.read_text().splitlines() if path.exists() else [], start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        ident, _, reason = line.partition("#")
        if not reason.strip():
            raise SystemExit(f"{path}:{number}: accepted advisory {ident.strip()} has no reason")
        accepted[ident.strip()] = reason.strip()
    return accepted


def run_pip_audit(lock: Path = LOCK, timeout_s: int = 30) -> dict:
    """pip-audit's JSON report for the pinned requirements (no resolution: the pins are the lock)."""
    command = [
        sys.executable, "-m", "pip_audit", "--requirement", str(lock), "--no-deps", "--disable-pip",
        "--format", "json", "--progress-spinner", "off", "--timeout", str(timeout_s),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"pip-audit failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}") from None


def verdict(report: dict, accepted: dict[str, str]) -> tuple[int, list[str]]:
    """(exit code, lines to print) for a pip-audit JSON report."""
    dependencies = report.get("dependencies", [])
    skipped = [d for d in dependencies if d.get("skip_reason")]
    if dependencies and len(skipped) == len(dependencies):
        return UNREACHABLE, [
            f"advisory service unreachable: none of {len(dependencies)} dependencies could be audited "
            f"(first: {skipped[0]['skip_reason']})"
        ]
    lines, found, seen = [], 0, set()
    for dependency in dependencies:
        for vuln in dependency.get("vulns", []):
            ids = {vuln["id"], *vuln.get("aliases", [])}
            known = ids & accepted.keys()
            seen |= known
            label = f"{dependency['name']}=={dependency['version']}: {vuln['id']} (fixed in {vuln.get('fix_versions')})"
            if known:
                lines.append(f"accepted  {label}: {accepted[min(known)]}")
            else:
                found += 1
                lines.append(f"VULNERABLE {label}")
    lines += [f"skipped   {d['name']}=={d['version']}: {d['skip_reason']}" for d in skipped]
    lines += [f"stale     {ident} is accepted but no longer reported; remove it" for ident in accepted.keys() - seen]
    lines.append(f"{found} unaccepted known vulnerabilit{'y' if found == 1 else 'ies'} in {len(dependencies)} pins")
    return (1 if found or skipped else 0), lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print pip-audit's JSON report too")
    args = parser.parse_args(argv)
    report = run_pip_audit()
    if args.json:
        print(json.dumps(report, indent=1))
    code, lines = verdict(report, accepted_ids())
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main())
