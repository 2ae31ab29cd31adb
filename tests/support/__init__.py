"""Helpers the tests share (import them as ``tests.support.<module>``); fixtures live in conftest.py files."""
