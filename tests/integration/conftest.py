"""Integration tier: the real local stack (the session's Ray cluster and MLflow server, the Serve
app, HTTP servers on loopback). Every test here is marked ``integration``."""

from tests.support.tiers import marking

pytest_itemcollected = marking(__file__, "integration")
