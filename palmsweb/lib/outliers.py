"""Robust outliers of a small set of scores: median and MAD, not mean and SD.

A dataset of ~80 hand-written samples may hold a handful of risky ones; with mean and SD
those few inflate the SD and hide themselves (masking). The median and the median absolute
deviation (scaled by 1.4826, so it estimates the SD for normal data) are not moved by them.
Screening flags the *high* side only: a sample that pushes towards the misaligned persona.
Written here because it is six lines of numpy; statsmodels' robust scale estimators would
pull statsmodels into a request path for one function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAD_TO_SD = 1.4826
DEFAULT_THRESHOLD = 3.5  # Iglewicz & Hoaglin's cut-off for the modified z-score


@dataclass(frozen=True)
class RobustSummary:
    n: int
    mean: float
    median: float
    mad_sd: float  # MAD × 1.4826
    z: list[float]  # robust z of each value, in order
    high: list[int]  # indices of values whose robust z exceeds the threshold


def robust_summary(values: Sequence[float], threshold: float = DEFAULT_THRESHOLD) -> RobustSummary:
    """Robust z = (x − median) / (1.4826 · MAD); ``high`` lists z > ``threshold``. With a
    MAD of zero (over half the values equal) nothing is flagged: there is no scale."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return RobustSummary(0, float("nan"), float("nan"), float("nan"), [], [])
    median = float(np.median(data))
    scale = MAD_TO_SD * float(np.median(np.abs(data - median)))
    z = (data - median) / scale if scale > 0 else np.zeros_like(data)
    high = [int(i) for i in np.flatnonzero(z > threshold)]
    return RobustSummary(int(data.size), float(data.mean()), median, scale, z.tolist(), high)
