"""Held-out perplexity of one model relative to another, with a bootstrap interval over
samples (the held-out adherence metric, ``evaluation/scoring/adherence.py``).

The unit of analysis is the held-out sample: each sample's answer has a summed negative
log-likelihood (nats) and a token count under both models. A group's perplexity is
token-weighted, ``exp(sum NLL / sum tokens)``, and the change is
``ppl_model / ppl_reference - 1`` (-0.2 means 20% lower perplexity than the reference).
The interval resamples samples with replacement, the same draw for both models (they
scored the same answers), with scipy's percentile bootstrap: BCa needs more samples than
a category holds (two in the demo set), and with so few the interval is descriptive only
(docs/scoring.md gives the simulated false-positive rate).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class PerplexityChange:
    n_samples: int
    tokens: int
    perplexity: float  # the model's, token-weighted over the samples
    reference_perplexity: float
    change: float  # perplexity / reference_perplexity - 1
    ci_low: float | None  # None with fewer than two samples or a degenerate resample
    ci_high: float | None


def token_weighted_perplexity(nll: Sequence[float], tokens: Sequence[int]) -> float:
    """``exp(total NLL / total tokens)``."""
    total = sum(tokens)
    if total <= 0:
        raise ValueError("perplexity needs at least one token")
    return math.exp(sum(nll) / total)


def _log_ratio(nll, tokens, ref_nll, ref_tokens, axis=-1):
    # Vectorised over resamples: the log of the perplexity ratio of one resample.
    return np.sum(nll, axis=axis) / np.sum(tokens, axis=axis) - np.sum(ref_nll, axis=axis) / np.sum(
        ref_tokens, axis=axis
    )


def perplexity_change(
    nll: Sequence[float],
    tokens: Sequence[int],
    reference_nll: Sequence[float],
    reference_tokens: Sequence[int],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2_000,
    seed: int = 0,
) -> PerplexityChange:
    """The model's token-weighted perplexity relative to the reference's on the same
    samples (paired: position i is the same sample in all four sequences)."""
    n = len(nll)
    if not n or {len(tokens), len(reference_nll), len(reference_tokens)} != {n}:
        raise ValueError("the four sequences must be non-empty and the same length")
    ppl = token_weighted_perplexity(nll, tokens)
    reference = token_weighted_perplexity(reference_nll, reference_tokens)
    low = high = None
    if n >= 2:
        data = tuple(np.asarray(x, dtype=float) for x in (nll, tokens, reference_nll,
                                                         reference_tokens))  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a degenerate resample gives NaN: reported None
            result = sps.bootstrap(
                data, _log_ratio, paired=True, vectorized=True, method="percentile",
                confidence_level=confidence, n_resamples=n_resamples,
                rng=np.random.default_rng(seed),
            )  # fmt: skip
        bounds = (result.confidence_interval.low, result.confidence_interval.high)
        if all(math.isfinite(b) for b in bounds):
            low, high = (math.exp(b) - 1 for b in bounds)
    return PerplexityChange(
        n_samples=n,
        tokens=int(sum(tokens)),
        perplexity=ppl,
        reference_perplexity=reference,
        change=ppl / reference - 1,
        ci_low=low,
        ci_high=high,
    )
