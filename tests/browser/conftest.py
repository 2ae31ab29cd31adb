"""Browser tier: headless Chromium on the real UI, which runs against the real Serve app, so every
test here is marked ``browser`` and ``integration``."""

from tests.support.tiers import marking

pytest_itemcollected = marking(__file__, "browser", "integration")
