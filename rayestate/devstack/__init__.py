"""Development and demo stand-ins, kept apart from the shipped code paths.

* :mod:`~rayestate.devstack.synthetic`: the seeded synthetic market (the one generator), used when
  no real dataset is given.
* :mod:`~rayestate.devstack.data_api`: a stand-in for the outside course data API, serving that
  market (or a dataset file) over the same HTTP contract, for `make up`, tests and benchmarks.

Nothing in ``ray_jobs`` or ``serve_app`` imports this package.
"""
