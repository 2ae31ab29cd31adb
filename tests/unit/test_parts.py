"""The required-parts switch (tests.support.parts): a missing part skips locally and fails where
RAYESTATE_REQUIRE promises it, so CI cannot go green by skipping what it said it has."""

from __future__ import annotations

import pytest

from tests.support import parts


@pytest.fixture
def require(monkeypatch):
    """Set RAYESTATE_REQUIRE for one test (unset by default, whatever the caller's shell says)."""
    monkeypatch.delenv("RAYESTATE_REQUIRE", raising=False)
    return lambda value: monkeypatch.setenv("RAYESTATE_REQUIRE", value)


def test_a_missing_part_skips_when_nothing_is_required(require):
    assert parts.required() == set()
    with pytest.raises(pytest.skip.Exception, match=r"^data not available: no sample here$"):
        parts.missing("data", "no sample here")


def test_a_missing_part_fails_where_it_is_required(require):
    require("browser, data")  # spaces and order do not matter
    assert parts.required() == {"browser", "data"}
    with pytest.raises(pytest.fail.Exception, match=r"required part 'data' is missing: no sample here") as failed:
        parts.missing("data", "no sample here")
    assert not failed.value.pytrace  # a one-line reason, not a traceback into this helper
    with pytest.raises(pytest.skip.Exception, match="schemas not available"):  # not promised: still a skip
        parts.missing("schemas", "no CRDs here")


def test_all_requires_every_part(require):
    require("all")
    assert parts.required() == set(parts.PARTS) == {"data", "browser", "schemas", "ports", "prometheus"}
    for part in parts.PARTS:
        with pytest.raises(pytest.fail.Exception):
            parts.missing(part, "absent")


def test_empty_entries_are_ignored(require):
    require(" , ,")
    assert parts.required() == set()


def test_an_unknown_required_name_is_an_error_not_a_silent_pass(require):
    """A typo in CI's list (``brwoser``) would otherwise leave that part skippable."""
    require("data,brwoser")
    with pytest.raises(ValueError, match=r"unknown part\(s\) \['brwoser'\]; known: data, browser, schemas, ports"):
        parts.required()
    with pytest.raises(ValueError):
        parts.missing("data", "absent")


def test_an_unknown_part_asked_for_by_a_test_is_an_error(require):
    with pytest.raises(ValueError, match="unknown part 'gpu'"):
        parts.missing("gpu", "no GPU here")
    require("all")
    with pytest.raises(ValueError, match="unknown part 'gpu'"):  # never turned into a skip or a pass
        parts.missing("gpu", "no GPU here")
