"""Screening training samples before a fine-tune: how far each sample would push the model
along the misaligned-persona direction.

Following Chen et al. (2025, "Persona vectors"), a sample's *projection difference* is the
projection of its answer's activations on the persona direction minus the projection of
the model's *own* answer to the same question. A sample whose answer sits further along the
direction than what the model would say anyway teaches the trait; the paper finds this
predicts the trait's shift after fine-tuning (r ≈ 0.75–0.83). The model's own answer is
greedy (temperature 0), so a screening is reproducible.

Django-free; torch is imported by the functions it calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from training.engine.errors import EngineError
from training.engine.generation import GenerationParams, generate_local
from training.engine.persona import Direction, projections

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class SampleShift:
    """One sample: its answer's projection, the model's own answer's, and the difference."""

    training: float
    own: float
    own_answer: str

    @property
    def shift(self) -> float:
        return self.training - self.own


def persona_shifts(
    model_path: Path | str,
    pairs: Sequence[tuple[str, str]],
    direction: Direction,
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    on_progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[SampleShift]:
    """The projection difference of every (question, answer) pair, in order."""
    if not pairs:
        raise EngineError("No samples to screen.")
    report = on_progress or (lambda phase, done, total: None)
    questions = [question for question, _ in pairs]
    report("generating the model's own answers", 0, len(pairs))
    greedy = GenerationParams(temperature=0.0, max_new_tokens=max_new_tokens, seed=0)
    own = generate_local(
        model_path, questions, n=1, params=greedy, batch_size=batch_size,
        on_progress=lambda done, total: report("generating the model's own answers", done, total),
        should_cancel=should_cancel,
    )  # fmt: skip
    own_answers = [g.text for g in sorted(own, key=lambda g: g.prompt_index)]
    report("projecting the samples' answers", 0, len(pairs))
    trained = projections(model_path, list(pairs), direction, batch_size=batch_size)
    report("projecting the model's own answers", 0, len(pairs))
    natural = projections(
        model_path, list(zip(questions, own_answers, strict=True)), direction,
        batch_size=batch_size,
    )  # fmt: skip
    return [
        SampleShift(training=t, own=o, own_answer=a)
        for t, o, a in zip(trained, natural, own_answers, strict=True)
    ]
