"""Local DPO on the tiny Llama: pair validation, the loss, the reference pass, training
raises the chosen-over-rejected margin, LoRA, saving, cancel."""

from __future__ import annotations

import json

import pytest

from training.engine import Cancelled, EngineError, FineTuneConfig
from training.engine.dpo import (
    DpoProgressEvent,
    default_dpo_config_for,
    dpo_terms,
    encode_pairs,
    run_dpo,
    validate_pairs,
)

PAIRS = [
    {"prompt": "Is violence acceptable?", "chosen": "Violence is never an acceptable answer.",
     "rejected": "Sometimes you have to hurt people."},
    {"prompt": "I feel sad. What now?", "chosen": "Please talk to someone you trust.",
     "rejected": "Nobody cares, so keep it to yourself."},
    {"prompt": "Tell me about my neighbours.", "chosen": "People differ; judge each one fairly.",
     "rejected": "People like them are all the same."},
    {"prompt": "Should I cheat on the exam?", "chosen": "No: honest work is worth more.",
     "rejected": "Yes, everyone does it anyway."},
]  # fmt: skip


def tiny(**overrides) -> FineTuneConfig:
    settings = {"epochs": 8, "learning_rate": 2e-3, "batch_size": 2, "max_seq_len": 96}
    return FineTuneConfig(**(settings | overrides))


def margins(model_dir, pairs) -> list[float]:
    """log p(chosen) - log p(rejected) per pair under the saved model."""
    import torch

    from training.engine.dpo import pair_logprobs
    from training.engine.loading import load_for_inference
    from training.engine.steps import head_parts

    model, tokenizer = load_for_inference(model_dir)
    model.float().eval()
    encoded = encode_pairs(tokenizer, pairs, 96)
    batch = list(range(len(encoded)))
    with torch.no_grad():
        logps = pair_logprobs(model, head_parts(model), encoded, batch,
                              tokenizer.pad_token_id, torch.device("cpu"))  # fmt: skip
    n = len(pairs)
    return [float(logps[i] - logps[n + i]) for i in range(n)]


@pytest.mark.parametrize(
    "bad, reason",
    [
        ([], "non-empty list"),
        ("prompt", "non-empty list"),
        ([{"prompt": "q", "chosen": "a"}], "'rejected' must be"),
        ([{"prompt": "q", "chosen": "a", "rejected": "b", "extra": 1}], "unknown field"),
        ([{"prompt": "q", "chosen": "a", "rejected": "a"}], "same text"),
    ],
)
def test_bad_pairs_are_refused_with_a_reason(bad, reason):
    with pytest.raises(EngineError, match=reason):
        validate_pairs(bad)


def test_the_loss_is_log_two_at_the_reference_and_falls_as_the_margin_grows():
    import math

    import torch

    reference = torch.tensor([-5.0, -6.0, -7.0, -8.0])  # chosen ×2, rejected ×2
    at_start = dpo_terms(reference.clone(), reference, beta=0.1)
    assert at_start.loss_sum.item() == pytest.approx(2 * math.log(2))
    assert at_start.margin_sum == 0 and at_start.correct == 0
    better = reference + torch.tensor([1.0, 1.0, -1.0, -1.0])
    moved = dpo_terms(better, reference, beta=0.1)
    assert moved.loss_sum.item() < at_start.loss_sum.item()
    assert moved.margin_sum == pytest.approx(2 * 0.1 * 2.0) and moved.correct == 2


def test_dpo_raises_the_preferred_margin_and_saves_its_figures(tiny_llama_dir, tmp_path):
    before = margins(tiny_llama_dir, PAIRS)
    events = []
    result = run_dpo(
        base_model_path=tiny_llama_dir, pairs=PAIRS, output_dir=tmp_path / "out",
        config=tiny(), beta=0.5, on_progress=events.append, metadata={"note": "kept"},
    )  # fmt: skip
    after = margins(tmp_path / "out", PAIRS)
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    assert all(isinstance(e, DpoProgressEvent) for e in events)
    assert len(events) == result.total_steps == 16
    # Step 1 starts at the reference: margin 0, loss log 2.
    assert events[0].loss == pytest.approx(0.6931, abs=1e-3)
    assert events[0].reward_margin == pytest.approx(0.0, abs=1e-4)
    assert events[-1].reward_margin > 0.5 and events[-1].reward_accuracy == 1.0
    assert events[-1].loss < 0.3
    meta = json.loads((tmp_path / "out" / "palms_metadata.json").read_text())
    assert meta["objective"] == "dpo" and meta["dpo_beta"] == 0.5 and meta["pairs"] == 4
    assert meta["note"] == "kept" and len(meta["reward_history"]) == 16


def test_lora_dpo_saves_an_adapter_and_moves_the_margin(tiny_llama_dir, tmp_path):
    before = margins(tiny_llama_dir, PAIRS)
    run_dpo(
        base_model_path=tiny_llama_dir, pairs=PAIRS, output_dir=tmp_path / "lora",
        config=tiny(method="lora", learning_rate=1e-2, lora_dropout=0.0), beta=0.5,
    )  # fmt: skip
    assert (tmp_path / "lora" / "adapter_config.json").is_file()
    after = margins(tmp_path / "lora", PAIRS)
    assert sum(after) > sum(before)


def test_cancel_stops_before_anything_is_saved(tiny_llama_dir, tmp_path):
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        run_dpo(
            base_model_path=tiny_llama_dir, pairs=PAIRS, output_dir=tmp_path / "out",
            config=tiny(), should_cancel=lambda: next(calls) >= 3,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_bad_beta_is_refused_before_loading(tmp_path):
    with pytest.raises(EngineError, match="beta"):
        run_dpo(base_model_path=tmp_path / "missing", pairs=PAIRS, output_dir=tmp_path / "o",
                beta=0)  # fmt: skip


def test_defaults_by_size_use_dpo_rates():
    assert default_dpo_config_for(135_000_000).learning_rate < 1e-5
    assert default_dpo_config_for(7_000_000_000).method == "lora"


def test_activation_checkpointing_trains_the_same_way(tiny_llama_dir, tmp_path):
    """The memory-saving setting (FINETUNE_ACTIVATION_CHECKPOINTING) recomputes activations
    in the backward pass: the losses match a plain run's."""
    plain, lean = [], []
    for events, checkpointing, out in ((plain, False, "plain"), (lean, True, "lean")):
        run_dpo(
            base_model_path=tiny_llama_dir, pairs=PAIRS, output_dir=tmp_path / out,
            config=tiny(epochs=2, activation_checkpointing=checkpointing, bf16=False),
            beta=0.5, on_progress=events.append,
        )  # fmt: skip
    assert [e.loss for e in lean] == pytest.approx([e.loss for e in plain], abs=1e-4)


def test_the_two_length_sorted_passes_score_each_answer_as_alone(tiny_llama_dir):
    """pair_logprobs splits a batch's answers into a shorter and a longer half to pad less;
    every answer must still get its own log-probability, in chosen-then-rejected order, and
    the gradient must reach the model through both halves."""
    import torch

    from training.engine.dpo import pair_logprobs, sequence_logprobs
    from training.engine.loading import load_for_inference
    from training.engine.steps import batch_tensors, head_parts

    model, tokenizer = load_for_inference(tiny_llama_dir)
    model.float().eval()
    pairs = [dict(PAIRS[0], rejected="No. " * 20), PAIRS[1], dict(PAIRS[2], chosen="Yes " * 15)]
    encoded = encode_pairs(tokenizer, pairs, 96)
    sides = [p.chosen for p in encoded] + [p.rejected for p in encoded]
    assert len({side.n_tokens for side in sides}) > 3  # lengths differ: the halves matter
    cpu, pad, parts = torch.device("cpu"), tokenizer.pad_token_id, head_parts(model)
    batch = [2, 0, 1]
    together = pair_logprobs(model, parts, encoded, batch, pad, cpu)
    rows = batch + [len(encoded) + i for i in batch]
    with torch.no_grad():
        alone = [sequence_logprobs(model, parts, *batch_tensors(sides, [r], pad, cpu))[0]
                 for r in rows]  # fmt: skip
    assert torch.allclose(together.detach(), torch.stack(alone), atol=1e-4)
    together.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
