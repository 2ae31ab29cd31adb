"""The README's configuration table lists every setting (keeps the docs true)."""

from rayestate.localstack import REPO
from rayestate.settings import Settings

README = (REPO / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [name for name in Settings.model_fields if f"RAYESTATE_{name.upper()}" not in README]
    assert not missing, f"README lacks settings: {missing}"


def test_readme_has_no_placeholders():
    assert "PLACEHOLDER" not in README
