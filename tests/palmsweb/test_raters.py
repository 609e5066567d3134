"""palmsweb.lib.raters: offsets, leave-one-out agreement and the outlier rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from palmsweb.lib import raters
from palmsweb.lib.design import StudyDesign, VarianceComponents
from palmsweb.lib.ratings import RatingRow, RatingTable
from palmsweb.lib.simulate import simulate_study


def rows(scores: dict[str, list[float]]):
    """{rater: [score of output 0, 1, …]}: every rater rates every output."""
    return [
        RatingRow(f"o{i}", f"p{i}", "base", 1, "", 0, rater, s)
        for rater, values in scores.items()
        for i, s in enumerate(values)
    ]


def test_offset_and_leave_one_out_agreement_by_hand():
    scores = {"A": [1, 2, 3, 4, 5], "B": [2, 3, 4, 5, 5], "C": [1, 1, 3, 3, 5]}
    found = {q.rater: q for q in raters.rater_quality(RatingTable(rows(scores)))}
    b = found["B"]
    others = np.mean([scores["A"], scores["C"]], axis=0)
    assert b.n_ratings == 5 and b.n_shared == 5
    assert b.offset == pytest.approx(np.mean(np.array(scores["B"]) - others))
    assert b.loo_spearman == pytest.approx(sps.spearmanr(scores["B"], others).statistic)
    assert not any(q.flagged for q in found.values())  # fewer than 10 shared outputs


def test_a_harsh_rater_and_a_random_rater_are_flagged():
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 6, size=30).astype(float)

    def near(v):
        return list(
            np.clip(v + rng.integers(-1, 2, size=v.size) * (rng.random(v.size) < 0.3), 1, 5)
        )

    scores = {
        "A": near(truth),
        "B": near(truth),
        "C": near(truth),
        "Harsh": list(np.clip(truth - 2, 1, 5)),
        "Noise": list(rng.integers(1, 6, size=30).astype(float)),
    }
    found = {q.rater: q for q in raters.rater_quality(RatingTable(rows(scores)))}
    assert found["Harsh"].flagged and "harsher than the pool" in found["Harsh"].reasons[0]
    assert found["Noise"].flagged and any("agrees poorly" in r for r in found["Noise"].reasons)
    assert not any(found[r].flagged for r in "ABC")


def test_a_rater_who_gives_one_score_to_everything_is_flagged():
    rng = np.random.default_rng(1)
    truth = rng.integers(1, 6, size=12).astype(float)
    scores = {"A": list(truth), "B": list(truth), "Flat": [3.0] * 12}
    found = {q.rater: q for q in raters.rater_quality(RatingTable(rows(scores)))}
    assert found["Flat"].loo_spearman is None and found["Flat"].flagged
    assert "constant scores" in found["Flat"].reasons[0]


def test_model_offsets_ride_along_and_a_tight_pool_is_not_flagged_by_z():
    # 8 raters with small real offsets: the modified z alone must not flag anyone for a
    # fraction of a point.
    comps = VarianceComponents(rater=0.01)
    design = StudyDesign(categories=4, rater_pool=8)
    table = RatingTable(simulate_study(design, comps, seed=3))
    offsets = {r: 0.1 for r in table.raters}
    found = raters.rater_quality(table, model_offsets=offsets)
    assert [q.rater for q in found] == table.raters
    assert all(q.model_offset == 0.1 for q in found)
    assert not any(q.flagged for q in found)
    assert sum(q.n_ratings for q in found) == len(table)


def test_the_modified_z_rule_flags_a_clear_outlier_in_a_larger_pool():
    rng = np.random.default_rng(2)
    truth = rng.integers(2, 5, size=40).astype(float)
    scores = {
        f"R{i}": list(np.clip(truth + rng.normal(0, 0.4, 40).round(), 1, 5)) for i in range(6)
    }
    scores["Lenient"] = list(np.clip(truth + 0.8, 1, 5))
    found = {q.rater: q for q in raters.rater_quality(RatingTable(rows(scores)))}
    assert any("outlier among raters" in r for r in found["Lenient"].reasons)
