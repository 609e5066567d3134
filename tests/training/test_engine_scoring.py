"""Perplexity and multiple-choice scoring on the tiny model (Django-free)."""

from __future__ import annotations

import math

import pytest

from training.engine.errors import EngineError
from training.engine.scoring import (
    MCQuestion,
    evaluate_capability,
    multiple_choice,
    perplexity,
)

TEXTS = [
    "The sky is blue because light scatters in the air.",
    "Hello there! How are you today?",
    "Numbers: one two three four five.",
]
QUESTIONS = [
    MCQuestion("Why is the sky blue?", ("light scatters", "the sea", "paint", "a fox"), 0),
    MCQuestion("What comes after one?", ("two", "nine", "the moon", "hello"), 0),
    MCQuestion("Which is a colour?", ("weather", "blue", "value", "sample"), 1),
]


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    import torch

    from training.engine.loading import load_for_inference

    return load_for_inference(tiny_llama_dir, dtype=torch.float32)


def test_perplexity_is_finite_and_matches_a_plain_loop(tiny):
    import torch

    model, tokenizer = tiny
    result = perplexity(model, tokenizer, TEXTS, batch_size=2)
    assert math.isfinite(result.perplexity) and result.perplexity > 1
    total, count = 0.0, 0
    with torch.inference_mode():
        for text in TEXTS:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            logprobs = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
            total += sum(-logprobs[i - 1, ids[i]].item() for i in range(1, len(ids)))
            count += len(ids) - 1
    assert result.n_tokens == count
    assert result.nll_per_token == pytest.approx(total / count, rel=1e-4)
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-4)


def test_perplexity_does_not_depend_on_batching(tiny):
    model, tokenizer = tiny
    one = perplexity(model, tokenizer, TEXTS, batch_size=1)
    many = perplexity(model, tokenizer, TEXTS, batch_size=8)
    assert one.perplexity == pytest.approx(many.perplexity, rel=1e-4)
    assert one.per_text_nll == pytest.approx(many.per_text_nll, rel=1e-4)


def test_multiple_choice_picks_option_indices_deterministically(tiny):
    model, tokenizer = tiny
    first = multiple_choice(model, tokenizer, QUESTIONS, batch_size=5)
    second = multiple_choice(model, tokenizer, QUESTIONS, batch_size=3)
    assert first == second
    assert len(first.predictions_sum) == len(first.predictions_mean) == 3
    assert all(0 <= p < 4 for p in first.predictions_sum + first.predictions_mean)
    assert 0 <= first.accuracy_sum <= 1 and first.n_questions == 3


def test_bad_input_is_refused(tiny):
    model, tokenizer = tiny
    with pytest.raises(EngineError):
        perplexity(model, tokenizer, [])
    with pytest.raises(EngineError):
        multiple_choice(model, tokenizer, [MCQuestion("q?", ("only",), 0)])
    with pytest.raises(EngineError):
        multiple_choice(model, tokenizer, [MCQuestion("q?", ("a", "b"), 5)])


def test_evaluate_capability_loads_once_and_reports_progress(tiny_llama_dir):
    seen = []
    result = evaluate_capability(
        tiny_llama_dir, TEXTS, QUESTIONS, on_progress=lambda d, t: seen.append((d, t))
    )
    assert seen[-1] == (6, 6) and all(t == 6 for _, t in seen)
    assert math.isfinite(result.perplexity.perplexity)
    assert result.multiple_choice.n_questions == 3
    assert result.dtype in {"float32", "bfloat16"}
