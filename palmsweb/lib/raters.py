"""Rater quality: each rater's offset, agreement with the pool, and an outlier flag.

Arm-free (nothing here uses the arm), so it can be shown before unblinding, by
pseudonym only.

- ``offset``: the mean, over the rater's ratings, of (score − mean of the *other*
  raters' scores on the same output). Positive: more lenient than the pool.
- ``model_offset``: the rater's effect from the mixed model when one is given
  (:mod:`palmsweb.lib.mixed`): a sum-coded fixed effect, or a BLUP when raters were
  random; both adjusted for arm, category and prompt.
- ``loo_spearman``: Spearman's ρ between the rater's scores and the mean of the other
  raters on the outputs they share (leave-one-out agreement with the pool).

Outlier rule (:data:`RULES`), applied only with at least :data:`MIN_SHARED` shared
outputs: a rater is flagged when |offset| ≥ 1 scale point, when ρ < 0.2 (or undefined:
the rater gave one score to everything), or, with 5 or more raters, when the offset's
modified z-score (Iglewicz–Hoaglin: 0.6745·(x − median)/MAD) exceeds 3.5 and the offset
is at least half a point from the median rater's (a tight pool makes the MAD tiny, and a
0.1-point difference is no reason to question a rater).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace

import numpy as np

from palmsweb.lib import stats
from palmsweb.lib.ratings import RatingTable

OFFSET_LIMIT = 1.0
MIN_SPEARMAN = 0.2
MIN_SHARED = 10
ROBUST_Z = 3.5
MIN_POOL_FOR_Z = 5
MIN_Z_DISTANCE = 0.5  # a z-outlier must also sit this far (points) from the median rater
RULES = (
    f"|offset| ≥ {OFFSET_LIMIT} point",
    f"leave-one-out Spearman ρ < {MIN_SPEARMAN} (or undefined)",
    f"modified z-score of the offset > {ROBUST_Z} and ≥ {MIN_Z_DISTANCE} point from the median"
    f" rater's (with ≥ {MIN_POOL_FOR_Z} raters)",
    f"each only with ≥ {MIN_SHARED} outputs shared with other raters",
)


@dataclass(frozen=True)
class RaterQuality:
    rater: Hashable
    n_ratings: int
    n_shared: int  # rated outputs that at least one other rater also rated
    offset: float | None
    loo_spearman: float | None
    model_offset: float | None = None
    flagged: bool = False
    reasons: tuple[str, ...] = ()


def rater_quality(
    table: RatingTable, *, model_offsets: dict[Hashable, float] | None = None
) -> tuple[RaterQuality, ...]:
    """One entry per rater (sorted like the table's raters), flagged by :data:`RULES`.

    ``model_offsets``: :attr:`MixedResult.rater_offsets`, when the mixed model was fitted."""
    scores: dict[Hashable, dict[Hashable, float]] = {}
    for r in table.rows:
        scores.setdefault(r.output_id, {})[r.rater] = r.score
    own: dict[Hashable, list[float]] = {}
    pool: dict[Hashable, list[float]] = {}
    counts: dict[Hashable, int] = {}
    for by_rater in scores.values():
        total = sum(by_rater.values())
        for rater, score in by_rater.items():
            counts[rater] = counts.get(rater, 0) + 1
            if len(by_rater) > 1:
                own.setdefault(rater, []).append(score)
                pool.setdefault(rater, []).append((total - score) / (len(by_rater) - 1))
    found = []
    for rater in table.raters:
        x, y = np.asarray(own.get(rater, [])), np.asarray(pool.get(rater, []))
        found.append(
            RaterQuality(
                rater=rater,
                n_ratings=counts[rater],
                n_shared=int(x.size),
                offset=float(np.mean(x - y)) if x.size else None,
                loo_spearman=stats.spearman_rho(x, y) if x.size >= 3 else None,
                model_offset=(model_offsets or {}).get(rater),
            )
        )
    return _flag(found)


def _modified_z(offsets: np.ndarray) -> np.ndarray | None:
    median = np.median(offsets)
    mad = np.median(np.abs(offsets - median))
    if mad == 0:
        return None
    z = 0.6745 * (offsets - median) / mad
    return np.where(np.abs(offsets - median) >= MIN_Z_DISTANCE, z, 0.0)


def _flag(found: list[RaterQuality]) -> tuple[RaterQuality, ...]:
    eligible = [q for q in found if q.n_shared >= MIN_SHARED and q.offset is not None]
    z = None
    if len(eligible) >= MIN_POOL_FOR_Z:
        z = _modified_z(np.array([q.offset for q in eligible]))
    z_of = {q.rater: float(v) for q, v in zip(eligible, z, strict=True)} if z is not None else {}
    out = []
    for q in found:
        reasons = []
        if q.n_shared >= MIN_SHARED:
            if q.offset is not None and abs(q.offset) >= OFFSET_LIMIT:
                side = "more lenient" if q.offset > 0 else "harsher"
                reasons.append(f"{side} than the pool by {abs(q.offset):.2f} points")
            if q.loo_spearman is None:
                reasons.append("no agreement measurable with the pool (constant scores)")
            elif q.loo_spearman < MIN_SPEARMAN:
                reasons.append(f"agrees poorly with the pool (ρ {q.loo_spearman:.2f})")
            if abs(z_of.get(q.rater, 0.0)) > ROBUST_Z:
                reasons.append(f"offset is an outlier among raters (z {z_of[q.rater]:.1f})")
        out.append(replace(q, flagged=bool(reasons), reasons=tuple(reasons)))
    return tuple(out)
