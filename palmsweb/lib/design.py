"""The shape of a PALMS study and the variance components of its ratings.

Shared by the simulator (:mod:`palmsweb.lib.simulate`), the planner
(:mod:`palmsweb.lib.power`) and the analysis, so the three agree on one model of a rating:

    score = μ + arm + prompt + prompt×arm + output + rater + residual

- ``prompt``: how easy the prompt is for every model (shared by all arms, so it cancels
  in a comparison paired by prompt);
- ``prompt_arm``: how much this arm's answers to this prompt differ from its usual
  (shared by the outputs of one prompt in one arm; it is what makes the samples of a
  prompt correlated and what a paired test must treat as its error);
- ``output``: one sampled answer against the other samples of the same prompt and arm
  (shared by the output's raters);
- ``rater``: a rater's leniency (shared by everything that rater rates);
- ``residual``: one rating against the rater's other ratings.

All five are variances on the 1–5 scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

ARMS = ("base", "control", "values_targeted")


@dataclass(frozen=True)
class StudyDesign:
    """How many of each: PALMS rated 5 prompts per category in 8 categories, 3 samples
    per prompt and arm, 3 raters per output. ``rater_pool`` is the number of distinct
    raters; None means ``raters_per_output`` (every rater rates every output)."""

    categories: int = 8
    prompts_per_category: int = 5
    samples_per_prompt: int = 3
    raters_per_output: int = 3
    rater_pool: int | None = None
    arms: tuple[str, ...] = ARMS

    def __post_init__(self):
        for name in ("categories", "prompts_per_category", "samples_per_prompt"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.raters_per_output < 1:
            raise ValueError("raters_per_output must be at least 1")
        if self.rater_pool is not None and self.rater_pool < self.raters_per_output:
            raise ValueError("rater_pool must be at least raters_per_output")
        if len(set(self.arms)) != len(self.arms) or len(self.arms) < 2:
            raise ValueError("a design needs at least two distinct arms")

    @property
    def pool(self) -> int:
        return self.rater_pool or self.raters_per_output

    @property
    def prompts(self) -> int:
        return self.categories * self.prompts_per_category


@dataclass(frozen=True)
class VarianceComponents:
    """Variances of the five random parts of a rating (see the module docstring).

    The defaults are a prior, not a measurement: they give an intra-prompt correlation
    of 0.35 (issue 15 measured 0.30–0.39 in a realistic simulation) and an SD of a single
    rating of about 1.1 scale points.
    """

    prompt: float = 0.20
    prompt_arm: float = 0.10
    output: float = 0.35
    rater: float = 0.05
    residual: float = 0.60

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not value >= 0:  # also refuses NaN
                raise ValueError(f"variance component {name} must be a number >= 0")

    @property
    def total(self) -> float:
        return self.prompt + self.prompt_arm + self.output + self.rater + self.residual

    def output_mean_variance(self, raters_per_output: int) -> float:
        """Variance of one output's mean rating. Rater offsets count as noise here,
        which is right when outputs get different raters from a pool."""
        within = (self.rater + self.residual) / raters_per_output
        return self.prompt + self.prompt_arm + self.output + within

    def intra_prompt_correlation(self, raters_per_output: int = 3) -> float | None:
        """Correlation of the mean ratings of two outputs of one prompt in one arm."""
        total = self.output_mean_variance(raters_per_output)
        if total == 0:
            return None
        return (self.prompt + self.prompt_arm) / total

    def paired_difference_variance(self, samples_per_prompt: int, raters_per_output: int) -> float:
        """Variance of one prompt's difference between two arms' prompt means (each the
        mean of ``samples_per_prompt`` output means of ``raters_per_output`` ratings).
        The prompt component cancels; rater offsets are counted as noise (conservative
        when the same raters rate both arms, exact when each rating gets its own rater)."""
        s, k = samples_per_prompt, raters_per_output
        return 2.0 * (self.prompt_arm + self.output / s + (self.rater + self.residual) / (s * k))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_COMPONENTS = VarianceComponents()
PALMS_DESIGN = StudyDesign()
