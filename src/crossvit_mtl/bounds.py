"""Restricted numbers the config parser checks (jsonargparse types), shared by every layer that
types a config value: one definition of "positive and finite", so the training options and the
transform settings refuse the same values with the same one-line message."""
from __future__ import annotations

import math

from jsonargparse.typing import restricted_number_type

PositiveFiniteFloat = restricted_number_type("PositiveFiniteFloat", float, [(">", 0.0), ("<", math.inf)],
                                             docstring="float restricted to be >0 and finite")
NonNegativeFiniteFloat = restricted_number_type("NonNegativeFiniteFloat", float, [(">=", 0.0), ("<", math.inf)],
                                                docstring="float restricted to be >=0 and finite")
