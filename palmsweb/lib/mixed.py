"""The overall primary analysis: a linear mixed model of every rating (statsmodels MixedLM).

Model, fitted by REML::

    score ~ C(arm) * C(category, Sum) + C(rater, Sum)
            + (1 | prompt) + (1 | prompt:arm) + (1 | output)

- ``arm`` is treatment-coded; with sum-coded categories, an arm's coefficient is its
  difference from the reference arm *averaged over categories*, so a contrast such as
  values-targeted − base is the overall effect the report needs; ``result.t_test`` gives
  its estimate, standard error, Wald (normal) CI and p.
- random intercepts for the **prompt** (``groups``), and, nested in it, variance
  components (``vc_formula``) for **prompt×arm** and **output**. Without these two the
  three samples of a prompt and the three ratings of an output would count as
  independent, the error the issue found in the old report.
- **rater** offsets: by default fixed, sum-coded effects (``rater_effects="fixed"``),
  read as each rater's deviation from the average rater. A crossed random rater
  intercept (``rater_effects="random"``) is statsmodels' documented way for crossed
  effects: one all-encompassing group with prompt, prompt×arm, output and rater as
  variance components. It gives the same arm contrast (checked in the tests) but the
  dense design of a PALMS-sized study (1,080 ratings × 523 random effects) took 20–60 s
  to fit here against 1–3 s, and a variance from the 3 raters of a PALMS study is barely
  estimable. The random fit also yields shrunken rater offsets (BLUPs).

The model is fitted twice, by L-BFGS and by Nelder–Mead, and the fit with the higher
REML likelihood is kept (``optimiser``): either alone sometimes stops short, see
:func:`_fit_robustly`. A fit that still does not converge, whose Hessian is
not positive definite (its standard errors cannot be trusted), or whose contrast has no
finite standard error is not used: the result says so and falls back to the paired t on
the prompt means of all categories (:func:`palmsweb.lib.clustered.compare_paired`). A
*singular* fit (a variance component estimated at zero, with a positive definite
Hessian) is reported in ``singular`` and ``notes`` but kept: a boundary estimate of a
variance does not bias the arm contrasts.

The Wald test uses the normal distribution (statsmodels has no Satterthwaite df); with
the 40 prompts of a PALMS study that is close to a t with 39 df.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from palmsweb.lib import stats
from palmsweb.lib.clustered import TESTED, compare_paired
from palmsweb.lib.ratings import ArmKey, RatingTable

MIXEDLM = "mixed model (MixedLM, REML)"
FALLBACK = "paired t on prompt means, all categories (fallback)"
SINGULAR_TOL = 1e-4  # a component below this share of the residual variance counts as 0
MAXITER = 5_000
OPTIMISERS = ("lbfgs", "nm")  # see _fit_robustly
OPTIMISER_NAMES = {"lbfgs": "L-BFGS", "nm": "Nelder–Mead"}


@dataclass(frozen=True)
class Contrast:
    """a − b over all categories, with its test."""

    a: ArmKey
    b: ArmKey
    method: str
    estimate: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    statistic: float | None  # z (mixed model) or t (fallback)
    p: float | None


@dataclass(frozen=True)
class MixedResult:
    method: str  # MIXEDLM, or FALLBACK when the model could not be used
    fell_back: bool
    converged: bool | None  # None: the fit raised before it could say
    rater_effects: str  # "fixed", "random" or "none" (a single rater)
    formula: str
    n_ratings: int
    n_prompts: int
    n_raters: int
    contrasts: tuple[Contrast, ...]
    variance: dict[str, float | None] = field(default_factory=dict)
    singular: tuple[str, ...] = ()  # components estimated at (or next to) zero
    rater_offsets: dict[Hashable, float] = field(default_factory=dict)
    rater_offset_kind: str | None = None  # "fixed effect" or "BLUP"
    optimiser: str | None = None  # the optimiser whose fit was kept
    notes: tuple[str, ...] = ()

    def contrast(self, a: ArmKey, b: ArmKey) -> Contrast | None:
        return next((c for c in self.contrasts if c.a == a and c.b == b), None)


def _frame(table: RatingTable):
    # Short codes keep the patsy formulas safe whatever the labels look like.
    import pandas as pd

    arm = {a: f"a{i}" for i, a in enumerate(table.arms)}
    cat = {c: f"c{i}" for i, c in enumerate(table.categories)}
    rater = {r: f"r{i}" for i, r in enumerate(table.raters)}
    prompt = {p: f"p{i}" for i, p in enumerate(table.prompts())}
    outputs = {o.output_id: f"o{i}" for i, o in enumerate(table.output_means)}
    rows = table.rows
    frame = pd.DataFrame(
        {
            "y": [r.score for r in rows],
            "arm": [arm[(r.arm, r.size_tag)] for r in rows],
            "cat": [cat[r.category] for r in rows],
            "rater": [rater[r.rater] for r in rows],
            "prompt": [prompt[r.prompt_id] for r in rows],
            "output": [outputs[r.output_id] for r in rows],
        }
    )
    frame["pa"] = frame["prompt"] + ":" + frame["arm"]
    frame["all"] = 1
    return frame, arm, rater


def _formula(n_categories: int, rater_effects: str) -> str:
    f = "y ~ C(arm, Treatment('a0'))"
    if n_categories > 1:
        f += " * C(cat, Sum)"
    if rater_effects == "fixed":
        f += " + C(rater, Sum)"
    return f


def _fit(frame, formula: str, rater_effects: str, method: str):
    """Fit by REML with one optimiser; returns (result, warning messages)."""
    import statsmodels.formula.api as smf

    if rater_effects == "random":
        model = smf.mixedlm(
            formula,
            frame,
            groups="all",
            re_formula="0",
            vc_formula={
                "prompt": "0 + C(prompt)",
                "prompt_arm": "0 + C(pa)",
                "output": "0 + C(output)",
                "rater": "0 + C(rater)",
            },
        )
    else:
        model = smf.mixedlm(
            formula,
            frame,
            groups="prompt",
            re_formula="1",
            vc_formula={"prompt_arm": "0 + C(arm)", "output": "0 + C(output)"},
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = model.fit(reml=True, method=[method], maxiter=MAXITER)
    return result, [str(w.message) for w in caught]


def _failed(result, messages: list[str]) -> bool:
    hessian = any("Hessian" in m and "not positive definite" in m for m in messages)
    return not result.converged or hessian


def _fit_robustly(frame, formula: str, rater_effects: str):
    """Fit with L-BFGS and with Nelder–Mead and keep the usable fit with the higher REML
    log-likelihood. Returns (result, messages, optimiser).

    Why two: on small or near-boundary data each optimiser sometimes stops short. In one
    test study (random rater intercepts) statsmodels' default, BFGS then L-BFGS from where
    BFGS stopped, reported convergence at a REML log-likelihood of −368.98, where L-BFGS
    and Nelder–Mead from the default start both reach −368.29, with a different
    prompt×arm variance and a 20% larger standard error. When neither fit is usable, the
    first is returned so the caller can say why; when both raise, the last error
    propagates."""
    best = first = error = None
    for method in OPTIMISERS:
        try:
            result, messages = _fit(frame, formula, rater_effects, method)
        except (ValueError, np.linalg.LinAlgError) as exc:
            error = exc
            continue
        first = first or (result, messages, method)
        if not _failed(result, messages) and (best is None or result.llf > best[0].llf):
            best = (result, messages, method)
    if best is not None:
        return best
    if first is not None:
        return first
    raise error


def _variance(result, rater_effects: str) -> dict[str, float | None]:
    names = list(result.model.exog_vc.names)
    out = {name: stats.json_float(v) for name, v in zip(names, result.vcomp, strict=True)}
    if rater_effects != "random":
        out["prompt"] = stats.json_float(result.cov_re.iloc[0, 0])
    out["residual"] = stats.json_float(result.scale)
    return {k: out[k] for k in ("prompt", "prompt_arm", "output", "rater", "residual") if k in out}


def _arm_param(code: str) -> str:
    return f"C(arm, Treatment('a0'))[T.{code}]"


def _contrast(result, arm_code, a: ArmKey, b: ArmKey, confidence: float) -> Contrast:
    names = list(result.fe_params.index)
    vector = np.zeros(len(names))
    for arm, sign in ((a, 1.0), (b, -1.0)):
        if arm_code[arm] != "a0":
            vector[names.index(_arm_param(arm_code[arm]))] += sign
    test = result.t_test(vector[None, :])
    low, high = test.conf_int(alpha=1 - confidence)[0]
    return Contrast(
        a=a,
        b=b,
        method=MIXEDLM,
        estimate=stats.json_float(np.ravel(test.effect)[0]),
        se=stats.json_float(np.ravel(test.sd)[0]),
        ci_low=stats.json_float(low),
        ci_high=stats.json_float(high),
        statistic=stats.json_float(np.ravel(test.tvalue)[0]),
        p=stats.json_float(np.ravel(test.pvalue)[0]),
    )


def _rater_offsets(result, rater_code, rater_effects: str) -> dict[Hashable, float]:
    label = {code: r for r, code in rater_code.items()}
    if rater_effects == "fixed":
        params = result.fe_params
        codes = sorted(label, key=lambda c: int(c[1:]))
        offsets = {c: float(params.get(f"C(rater, Sum)[S.{c}]", 0.0)) for c in codes[:-1]}
        offsets[codes[-1]] = -sum(offsets.values())  # sum coding: the offsets add to 0
        return {label[c]: v for c, v in offsets.items()}
    effects = next(iter(result.random_effects.values()))
    prefix = "rater[C(rater)["
    return {
        label[name[len(prefix) : -2]]: float(v)
        for name, v in effects.items()
        if name.startswith(prefix)
    }


def fit_mixed(
    table: RatingTable,
    contrasts: Sequence[tuple[ArmKey, ArmKey]],
    *,
    rater_effects: Literal["fixed", "random"] = "fixed",
    confidence: float = 0.95,
) -> MixedResult:
    """Fit the model and test each (a, b) contrast; fall back to the paired t if needed."""
    if rater_effects not in ("fixed", "random"):
        raise ValueError("rater_effects must be 'fixed' or 'random'")
    for a, b in contrasts:
        if a not in table.arms or b not in table.arms:
            raise ValueError(f"no ratings for arm {a if a not in table.arms else b}")
    n_raters = len(table.raters)
    effects = rater_effects if n_raters > 1 else "none"
    formula = _formula(len(table.categories), effects)
    head = dict(
        rater_effects=effects,
        formula=formula,
        n_ratings=len(table),
        n_prompts=len(table.prompts()),
        n_raters=n_raters,
    )
    frame, arm_code, rater_code = _frame(table)
    notes: list[str] = []
    try:
        result, messages, optimiser = _fit_robustly(frame, formula, effects)
    except (ValueError, np.linalg.LinAlgError) as exc:
        reason = f"the mixed model could not be fitted ({exc})"
        return _fallback(table, contrasts, None, reason, confidence=confidence, **head)
    found = [_contrast(result, arm_code, a, b, confidence) for a, b in contrasts]
    if _failed(result, messages) or any(c.se is None or c.p is None for c in found):
        reason = (
            "the mixed model did not converge"
            if not result.converged
            else "the mixed model's standard errors are unreliable (the Hessian is not "
            "positive definite)"
        )
        return _fallback(table, contrasts, result.converged, reason, confidence=confidence, **head)
    variance = _variance(result, effects)
    floor = SINGULAR_TOL * (variance.get("residual") or 0.0)
    singular = tuple(k for k, v in variance.items() if k != "residual" and (v or 0.0) <= floor)
    if singular:
        notes.append(
            "singular fit: variance estimated at zero for "
            + ", ".join(singular)
            + " (kept: it does not bias the arm contrasts)"
        )
    offsets = _rater_offsets(result, rater_code, effects) if effects != "none" else {}
    return MixedResult(
        method=MIXEDLM,
        fell_back=False,
        converged=True,
        contrasts=tuple(found),
        variance=variance,
        singular=singular,
        rater_offsets=offsets,
        rater_offset_kind={"fixed": "fixed effect", "random": "BLUP"}.get(effects),
        optimiser=OPTIMISER_NAMES[optimiser],
        notes=tuple(notes),
        **head,
    )


def _fallback(table, contrasts, converged, reason, *, confidence, **head) -> MixedResult:
    found = []
    for a, b in contrasts:
        c = compare_paired(table, a, b, None, confidence=confidence, n_resamples=0)
        tested = c.status == TESTED
        found.append(
            Contrast(
                a=a,
                b=b,
                method=FALLBACK,
                estimate=c.mean_diff,
                se=float(c.sd_diff / np.sqrt(c.n_prompts)) if tested else None,
                ci_low=c.t_ci_low,
                ci_high=c.t_ci_high,
                statistic=c.t,
                p=c.p,
            )
        )
    return MixedResult(
        method=FALLBACK,
        fell_back=True,
        converged=converged,
        contrasts=tuple(found),
        notes=(f"{reason}: the overall test is the paired t on all prompts instead",),
        **head,
    )
