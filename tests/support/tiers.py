"""Tiers are folders: each tier's conftest.py marks the tests collected under it.

A marker then says where a test lives and what it needs, so ``-m "not integration"`` and
``pytest tests/unit`` select the same tests, and a test cannot claim a tier its folder does not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def marking(conftest_file: str, *markers: str) -> Callable[[pytest.Item], None]:
    """A ``pytest_itemcollected`` hook adding ``markers`` to every test under the conftest's folder.

    ``pytest_itemcollected`` runs while collecting, before ``-m`` selects, and pytest calls a
    folder's conftest hook only for items under that folder; the path check makes that explicit.
    """
    folder = Path(conftest_file).resolve().parent

    def pytest_itemcollected(item: pytest.Item) -> None:
        if item.path.is_relative_to(folder):
            for name in markers:
                item.add_marker(name)

    return pytest_itemcollected
