"""Rewrite the README's configuration table from the Settings fields (tests/unit/test_readme.py checks it).

.venv/bin/python scripts/readme_settings.py
"""

from __future__ import annotations

from pathlib import Path

from rayestate.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = "| variable | default | meaning |"


def table() -> str:
    rows = [HEADER, "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = "~/.rayestate" if name == "state_dir" else field.default
        shown = "" if default in (None, "") else f"`{default}`"
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `RAYESTATE_{name.upper()}` | {shown} | {meaning} |")
    return "\n".join(rows)


def main() -> None:
    text = README.read_text()
    start = text.index(HEADER)
    end = text.index("\n\n", start)
    README.write_text(text[:start] + table() + text[end:])


if __name__ == "__main__":
    main()
