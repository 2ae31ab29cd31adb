"""Unit tier: plain Python in this process, no servers, no files from outside the repository.

Fast enough for every change (`make test-fast` runs this folder). Tests that need the local stack
belong in integration/, the real samples in data/, a browser in browser/.
"""

from tests.support.tiers import marking

pytest_itemcollected = marking(__file__, "unit")
