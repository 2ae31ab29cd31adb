"""Data tier: tests that read the real samples under ../shared/data (missing: skipped locally,
failed where RAYESTATE_REQUIRE names ``data``). Every test here is marked ``data``; those that also
run on the local stack carry ``integration`` themselves."""

from tests.support.tiers import marking

pytest_itemcollected = marking(__file__, "data")
