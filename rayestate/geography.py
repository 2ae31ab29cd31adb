"""Which ZIP codes belong to which state: USPS 3-digit ZIP prefix ranges.

The dataset stores zip_code as a float, so leading zeros are lost (601.0 is 00601); the
prefix is ``int(zip) // 100``. The synthetic generator draws ZIPs from these ranges and
cleaning uses them to spot ZIPs that contradict the row's state (typos, shifted columns).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rayestate.schema import STATES

#: Inclusive ranges of 3-digit ZIP prefixes per state/territory (USPS assignment).
STATE_ZIP3: dict[str, tuple[tuple[int, int], ...]] = {
    "Alabama": ((350, 369),), "Alaska": ((995, 999),), "Arizona": ((850, 865),),
    "Arkansas": ((716, 729),), "California": ((900, 961),), "Colorado": ((800, 816),),
    "Connecticut": ((60, 69),), "Delaware": ((197, 199),), "District of Columbia": ((200, 200), (202, 205)),
    "Florida": ((320, 349),), "Georgia": ((300, 319), (398, 399)), "Guam": ((969, 969),),
    "Hawaii": ((967, 968),), "Idaho": ((832, 838),), "Illinois": ((600, 629),),
    "Indiana": ((460, 479),), "Iowa": ((500, 528),), "Kansas": ((660, 679),),
    "Kentucky": ((400, 427),), "Louisiana": ((700, 714),), "Maine": ((39, 49),),
    "Maryland": ((206, 219),), "Massachusetts": ((10, 27), (55, 55)), "Michigan": ((480, 499),),
    "Minnesota": ((550, 567),), "Mississippi": ((386, 397),), "Missouri": ((630, 658),),
    "Montana": ((590, 599),), "Nebraska": ((680, 693),), "Nevada": ((889, 898),),
    "New Hampshire": ((30, 38),), "New Jersey": ((70, 89),), "New Mexico": ((870, 884),),
    "New York": ((5, 5), (100, 149)), "North Carolina": ((270, 289),), "North Dakota": ((580, 588),),
    "Ohio": ((430, 459),), "Oklahoma": ((730, 749),), "Oregon": ((970, 979),),
    "Pennsylvania": ((150, 196),), "Puerto Rico": ((6, 7), (9, 9)), "Rhode Island": ((28, 29),),
    "South Carolina": ((290, 299),), "South Dakota": ((570, 577),), "Tennessee": ((370, 385),),
    "Texas": ((750, 799), (885, 885)), "Utah": ((840, 847),), "Vermont": ((50, 54), (56, 59)),
    "Virgin Islands": ((8, 8),), "Virginia": ((201, 201), (220, 246)), "Washington": ((980, 994),),
    "West Virginia": ((247, 268),), "Wisconsin": ((530, 549),), "Wyoming": ((820, 831),),
}  # fmt: skip


#: Valid prefixes used by IRS centres and federal agencies, hardly ever on a home listing.
SPECIAL_USE_ZIP3 = frozenset({5, 55, 202, 203, 204, 205})


def _allowed_table() -> np.ndarray:
    """allowed[state_index, zip3] is True when that prefix belongs to that state."""
    allowed = np.zeros((len(STATES), 1000), dtype=bool)
    for index, state in enumerate(STATES):
        for low, high in STATE_ZIP3[state]:
            allowed[index, low : high + 1] = True
    return allowed


ALLOWED_ZIP3 = _allowed_table()


def residential_zip3(state: str) -> np.ndarray:
    """The state's 3-digit prefixes where homes are listed (special-use ones left out), ascending."""
    prefixes = np.flatnonzero(ALLOWED_ZIP3[STATES.index(state)])
    return prefixes[~np.isin(prefixes, list(SPECIAL_USE_ZIP3))]


def zip_matches_state(zip_code: pd.Series, state: pd.Series) -> np.ndarray:
    """Per row: the ZIP is a whole number 0..99999 whose prefix belongs to the row's state.

    Rows with a missing ZIP or an unknown state count as not matching.
    """
    zips = pd.to_numeric(zip_code, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    codes = pd.Categorical(state, categories=STATES).codes
    whole = np.isfinite(zips) & (zips >= 0) & (zips < 100_000) & (np.floor(zips) == zips)
    prefix = np.where(whole, zips, 0).astype(np.int64) // 100
    return whole & (codes >= 0) & ALLOWED_ZIP3[np.maximum(codes, 0), prefix]
