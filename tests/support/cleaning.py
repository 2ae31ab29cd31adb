"""A raw batch with one row per cleaning rule, for the rule tests and the Ray cleaning job's tests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ray_jobs.clean import DUPLICATE_RULE, REMOVAL_RULES, clean_table_pandas
from rayestate.devstack.synthetic import generate_table
from rayestate.schema import RAW_SCHEMA

EXPECTED_REMOVED = dict.fromkeys((*REMOVAL_RULES, DUPLICATE_RULE), 1)
EXPECTED_REPAIRED = {"zip_invalid": 1, "zip_state_mismatch": 1, "prev_sold_date_invalid": 2}


def problem_table() -> pa.Table:
    """40 valid rows, then one row per rule (row 9 duplicates row 20; rows 14-16 only look odd)."""
    valid, removed, _ = clean_table_pandas(generate_table(400, seed=8))
    assert not any(removed.values())
    frame = valid.slice(0, 40).to_pandas()
    edits = {
        0: {"price": np.nan}, 1: {"price": 0.0}, 2: {"price": 5e8}, 3: {"status": "pending"},
        4: {"state": "Atlantis"}, 5: {"bed": 99.0}, 6: {"bath": 198.0}, 7: {"acre_lot": -1.0},
        8: {"house_size": 684_327.0}, 10: {"zip_code": 2101.5}, 12: {"prev_sold_date": "2020-13-45"},
        13: {"prev_sold_date": "2999-01-01"}, 14: {"status": " SOLD "}, 16: {"state": "texas", "zip_code": 75001.0},
        15: {"bed": np.nan, "bath": np.nan, "house_size": np.nan},
    }  # fmt: skip
    for row, values in edits.items():
        for column, value in values.items():
            frame.loc[row, column] = value
    frame.loc[11, ["state", "zip_code"]] = ["Florida", 2101.0]  # a Massachusetts zip in Florida
    frame.loc[9] = frame.loc[20]
    return pa.Table.from_pandas(frame, schema=RAW_SCHEMA, preserve_index=False)
