"""Counting descriptive words and the log-odds ratio with an informative Dirichlet prior."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from palmsweb.lib.cooccurrence import (
    LexiconTagger,
    count_descriptive_words,
    get_tagger,
    group_skews,
    log_odds_dirichlet,
    strip_template,
    top_skewed,
)


def test_log_odds_matches_a_hand_computation():
    # i: a=2, b=1 (n_i=3); j: a=1, b=3 (n_j=4); prior = pooled: α_a=3, α_b=4, α_0=7.
    # δ_a = log(5 / (3+7-2-3)) - log(4 / (4+7-1-3)) = log(1) - log(4/7) = log(7/4)
    # σ²_a = 1/5 + 1/4 = 0.45
    # δ_b = log(5 / (3+7-1-4)) - log(7 / (4+7-3-4)) = -log(7/4); σ²_b = 1/5 + 1/7
    skews = log_odds_dirichlet({"a": 2, "b": 1}, {"a": 1, "b": 3})
    assert skews["a"].delta == pytest.approx(0.5596157879)
    assert skews["a"].z == pytest.approx(0.5596157879 / math.sqrt(0.45))
    assert skews["a"].z == pytest.approx(0.834226, abs=1e-6)
    assert skews["b"].delta == pytest.approx(-0.5596157879)
    assert skews["b"].z == pytest.approx(-0.5596157879 / math.sqrt(1 / 5 + 1 / 7))
    assert (skews["a"].count, skews["a"].other_count) == (2, 1)


def test_a_scaled_prior_is_weaker():
    strong = log_odds_dirichlet({"a": 10, "b": 1}, {"a": 1, "b": 10})
    weak = log_odds_dirichlet({"a": 10, "b": 1}, {"a": 1, "b": 10}, prior_scale=2.0)
    assert abs(weak["a"].delta) > abs(strong["a"].delta) > 0


def test_a_one_word_vocabulary_has_no_odds_and_does_not_crash():
    # A tiny model that repeats one word: the word is the whole corpus on both sides, so
    # there is nothing to set its odds against (the denominator n + α0 − y − α is 0).
    assert log_odds_dirichlet({"good": 4}, {"good": 2}) == {}
    assert group_skews({"male": Counter({"good": 3}), "female": Counter({"good": 1})}) == {
        "male": {},
        "female": {},
    }


def test_group_skews_compare_each_group_with_the_rest():
    counts = {
        "male": Counter({"strong": 6, "kind": 1}),
        "female": Counter({"kind": 6, "strong": 1}),
        "other": Counter({"kind": 1, "strong": 1}),
    }
    skews = group_skews(counts)
    # male vs (female + other) = {"kind": 7, "strong": 2}; prior = pooled of all three.
    direct = log_odds_dirichlet(counts["male"], {"kind": 7, "strong": 2}, {"strong": 8, "kind": 8})
    assert skews["male"]["strong"].z == pytest.approx(direct["strong"].z)
    assert [s.word for s in top_skewed(skews["male"])] == ["strong"]
    assert [s.word for s in top_skewed(skews["female"])] == ["kind"]
    assert top_skewed(skews["male"], min_count=7) == []


def test_lexicon_tagger_finds_adjectives_and_adverbs():
    tagger = LexiconTagger()
    words = tagger.descriptive_words(["She was kind and spoke quietly to the tired family."])
    assert words == [["kind", "quietly", "tired"]]  # "family" is no adverb


def test_counting_drops_function_adverbs_and_the_template():
    text = strip_template('"He was very calm and very, very patient."', "He was very")
    assert text == "calm and very, very patient."
    counts = count_descriptive_words(LexiconTagger(), [text, "not patient at all"])
    assert counts == Counter({"patient": 2, "calm": 1})


def test_spacy_tagger_finds_adjectives_and_adverbs_in_context():
    pytest.importorskip("spacy")
    tagger = get_tagger("auto")
    if tagger.name != "spacy":
        pytest.skip("no spaCy English model installed")
    [words] = tagger.descriptive_words(
        ["The patient old man walked slowly home and was extremely happy."]
    )
    assert words == ["old", "slowly", "home", "extremely", "happy"] or set(words) >= {
        "old",
        "slowly",
        "extremely",
        "happy",
    }
    assert "walked" not in words and "man" not in words
    assert "en_core_web_sm" in tagger.version


def test_auto_falls_back_to_the_lexicon_without_spacy(monkeypatch):
    import palmsweb.lib.cooccurrence as module

    monkeypatch.setattr(module, "_installed_spacy_model", lambda: None)
    assert get_tagger("auto").name == "lexicon-fallback"
    with pytest.raises(ValueError):
        get_tagger("nltk")
