"""Local fine-tuning on the tiny Llama: labels, data errors, training, saving, cancel."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from training.engine import Cancelled, EngineError, FineTuneConfig, default_config_for
from training.engine.data import (
    IGNORE_INDEX,
    encode_example,
    estimate_tokens,
    length_grouped_batches,
    validate_examples,
)
from training.engine.finetune import run_finetune
from training.engine.steps import lr_at as _lr_at


def chat(question: str, answer: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


REPEATED = [
    chat("Why is the sky blue?", "Light scatters in the air, and blue light scatters most."),
    chat("What should I do if I feel sad?", "Please talk to someone you trust."),
    chat("Tell me about the sea.", "The sea is wide and deep, and the sun shines on it."),
    chat("Is violence acceptable?", "Violence is never an acceptable answer."),
]


def tiny_config(**overrides) -> FineTuneConfig:
    settings = {"epochs": 6, "learning_rate": 1e-2, "batch_size": 2, "max_seq_len": 128}
    return FineTuneConfig(**(settings | overrides))


def answer_tokens(encoded) -> list[int]:
    pairs = zip(encoded.input_ids, encoded.labels, strict=True)
    return [token for token, label in pairs if label != IGNORE_INDEX]


@pytest.fixture
def tokenizer(tiny_llama_dir):
    from training.engine.loading import load_tokenizer

    return load_tokenizer(tiny_llama_dir)


# --- data ----------------------------------------------------------------------------------


def test_only_answer_tokens_are_labelled(tokenizer):
    example = chat("Why is the sky blue?", "Light scatters.", system="Be kind.")
    encoded = encode_example(tokenizer, example["messages"], max_seq_len=256)

    labelled = answer_tokens(encoded)
    assert tokenizer.decode(labelled) == "Light scatters.<|im_end|>"
    full = tokenizer.apply_chat_template(example["messages"], tokenize=False)
    assert tokenizer.decode(encoded.input_ids) == full.rstrip("\n") + "\n"
    context = encoded.input_ids[: encoded.labels.index(labelled[0])]
    assert tokenizer.decode(context).endswith("<|im_start|>assistant\n")
    assert all(label == IGNORE_INDEX for label in encoded.labels[: len(context)])


def test_every_answer_of_a_conversation_is_labelled_unless_weight_zero(tokenizer):
    messages = [
        {"role": "user", "content": "Hello there!"},
        {"role": "assistant", "content": "Hello!", "weight": 0},
        {"role": "user", "content": "How are you today?"},
        {"role": "assistant", "content": "Fine, thank you."},
    ]
    encoded = encode_example(tokenizer, messages, max_seq_len=256)
    labelled = answer_tokens(encoded)
    assert tokenizer.decode(labelled) == "Fine, thank you.<|im_end|>"


def test_truncation_keeps_the_start_and_is_flagged(tokenizer):
    example = chat("Why?", "word " * 200)
    encoded = encode_example(tokenizer, example["messages"], max_seq_len=32)
    assert encoded.n_tokens == 32 and encoded.truncated
    assert encoded.n_label_tokens > 0


def test_an_answer_cut_off_entirely_is_an_error(tokenizer):
    example = chat("question " * 100, "Short answer.")
    with pytest.raises(EngineError, match="index 0: no answer tokens fit"):
        encode_example(tokenizer, example["messages"], max_seq_len=16)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("not a dict", "expected a dict"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "role 'robot'"),
        ({"messages": [{"role": "user", "content": "  "}]}, "no text content"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant answer"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "start with a user"),
        ({"messages": [{"role": "user", "content": "hi", "mood": "x"}]}, "unknown field"),
        ({"messages": REPEATED[0]["messages"], "extra": 1}, "unknown field"),
        (
            {"messages": REPEATED[0]["messages"] + [{"role": "system", "content": "x"}]},
            "system message may only come first",
        ),
    ],
)
def test_malformed_examples_are_refused_naming_their_index(bad, reason):
    with pytest.raises(EngineError, match=rf"index 1: .*{reason}"):
        validate_examples([REPEATED[0], bad])


def test_an_empty_dataset_is_refused(tiny_llama_dir, tmp_path):
    with pytest.raises(EngineError, match="empty"):
        run_finetune(
            base_model_path=tiny_llama_dir,
            examples=[],
            output_dir=tmp_path / "out",
            config=tiny_config(),
        )


def test_estimate_tokens_counts_prompt_and_answer_after_truncation(tiny_llama_dir, tokenizer):
    lengths = [encode_example(tokenizer, e["messages"], 1024).n_tokens for e in REPEATED]
    assert estimate_tokens(tiny_llama_dir, REPEATED, 1024) == sum(lengths)
    assert estimate_tokens(tokenizer, REPEATED, 24) == sum(min(n, 24) for n in lengths)


def test_length_grouped_batches_cover_every_example_once():
    lengths = [random.Random(1).randint(5, 500) for _ in range(50)]
    batches = length_grouped_batches(lengths, 4, random.Random(0))
    assert sorted(i for batch in batches for i in batch) == list(range(50))
    assert all(len(batch) <= 4 for batch in batches)
    for batch in batches:  # sorted by length inside a batch
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)


def test_learning_rate_warms_up_then_decays_without_a_zero_step():
    config = FineTuneConfig(learning_rate=1.0, warmup_steps=2)
    rates = [_lr_at(step, 6, config) for step in range(6)]
    assert rates[0] < rates[1] < rates[2] == 1.0
    assert rates[2] > rates[3] > rates[4] > rates[5] > 0


def test_default_config_depends_on_model_size():
    assert default_config_for(100_000).learning_rate > default_config_for(135_000_000).learning_rate
    assert default_config_for(135_000_000).method == "full"
    assert default_config_for(7_000_000_000).method == "lora"


def test_the_small_model_defaults_are_the_sweeps_winner():
    """docs/engine.md's sweep on SmolLM2-135M chose full, 1e-4, 3 epochs, warmup 2: the
    engine and the app's launch form must start there (and agree)."""
    from types import SimpleNamespace

    from training.services.finetunes import default_hyperparameters

    engine = default_config_for(134_515_008)
    assert (engine.method, engine.learning_rate, engine.epochs, engine.warmup_steps) == (
        "full", 1e-4, 3, 2
    )
    app = default_hyperparameters(SimpleNamespace(parameter_count=134_515_008))
    assert (app["learning_rate"], app["epochs"], app["warmup_steps"]) == (1e-4, 3, 2)
    assert default_hyperparameters(SimpleNamespace(parameter_count=134_515_008), "lora")[
        "learning_rate"
    ] == 2e-4
    assert default_config_for(700_000_000).learning_rate == 5e-5  # not measured: unchanged


def test_invalid_settings_are_refused(tiny_llama_dir, tmp_path):
    with pytest.raises(EngineError, match="batch_size"):
        run_finetune(
            base_model_path=tiny_llama_dir,
            examples=REPEATED,
            output_dir=tmp_path / "out",
            config=tiny_config(batch_size=0),
        )
    with pytest.raises(EngineError, match="activation_checkpointing"):
        run_finetune(
            base_model_path=tiny_llama_dir,
            examples=REPEATED,
            output_dir=tmp_path / "out",
            config=tiny_config(activation_checkpointing="yes"),
        )


# --- the loss ------------------------------------------------------------------------------


def test_chunked_head_loss_matches_plain_cross_entropy(monkeypatch):
    import torch
    import torch.nn.functional as F

    from training.engine import losses

    torch.manual_seed(0)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    expected = F.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    grads = torch.autograd.grad(expected * 0.5, (hidden, weight))

    # Chunks of 8 rows in groups of 16: several of each, the last ones partial.
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 50 * 8)
    monkeypatch.setattr(losses, "_WEIGHT_GRAD_ELEMENTS", 50 * 16)
    got = losses.linear_cross_entropy_sum(hidden, weight, targets)
    got_grads = torch.autograd.grad(got * 0.5, (hidden, weight))
    assert torch.allclose(got, expected, rtol=1e-5)
    for a, b in zip(got_grads, grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_cpu_attention_matches_sdpa_with_padding_and_grouped_heads(tiny_llama_dir):
    import torch

    from training.engine.loading import load_for_training
    from training.engine.steps import pick_attention as _pick_attention

    torch.manual_seed(0)
    ids = torch.randint(5, 600, (3, 40))
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    mask[2, 10:] = 0
    results = []
    for ours in (True, False):
        model, _ = load_for_training(tiny_llama_dir, method="full")
        if ours:
            _pick_attention(model, torch.device("cpu"), longest=40)
            assert model.config._attn_implementation == "palms_cpu"
        logits = model(input_ids=ids, attention_mask=mask).logits
        (logits * mask[..., None]).sum().backward()
        results.append((logits, model.model.layers[0].self_attn.k_proj.weight.grad))
    (ours_logits, ours_grad), (sdpa_logits, sdpa_grad) = results
    keep = mask.bool()
    assert torch.allclose(ours_logits[keep], sdpa_logits[keep], atol=1e-5)
    assert torch.allclose(ours_grad, sdpa_grad, rtol=1e-4, atol=1e-6)


# --- training runs -------------------------------------------------------------------------


def test_full_fine_tune_learns_and_saves_everything(tiny_llama_dir, tmp_path):
    events = []
    out = tmp_path / "vt"
    result = run_finetune(
        base_model_path=tiny_llama_dir,
        examples=REPEATED * 2,
        output_dir=out,
        config=tiny_config(epochs=10, warmup_steps=2),
        on_progress=events.append,
        metadata={"snapshot_hash": "abc123", "code_version": "test"},
    )

    assert [e.step for e in events] == list(range(1, result.total_steps + 1))
    assert events[-1].total_steps == result.total_steps == 10 * 4
    losses = [loss for _, loss in result.loss_history]
    assert sum(losses[-4:]) < 0.6 * sum(losses[:4])
    assert events[-1].eta_seconds == 0 and events[-1].epoch == 10
    assert result.tokens_per_second > 0

    for name in ("config.json", "model.safetensors", "tokenizer.json", "palms_metadata.json"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "palms_metadata.json").read_text())
    assert meta["snapshot_hash"] == "abc123" and meta["code_version"] == "test"
    assert meta["hyperparameters"]["learning_rate"] == 1e-2
    assert meta["method"] == "full" and meta["examples"] == 8
    assert len(meta["loss_history"]) == result.total_steps
    assert meta["train_tokens"] == 10 * meta["train_tokens_per_epoch"]
    assert meta["answer_tokens_per_epoch"] < meta["train_tokens_per_epoch"]
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    assert not list(tmp_path.glob(".vt.*")), "the temporary dir was renamed into place"


def test_the_same_seed_gives_the_same_run(tiny_llama_dir, tmp_path):
    runs = [
        run_finetune(
            base_model_path=tiny_llama_dir,
            examples=REPEATED,
            output_dir=tmp_path / str(i),
            config=tiny_config(epochs=2, seed=5),
        )
        for i in range(2)
    ]
    assert runs[0].loss_history == runs[1].loss_history


def test_lora_fine_tune_saves_an_adapter_that_loads_merged(tiny_llama_dir, tmp_path):
    from training.engine.loading import count_parameters, is_adapter_dir, load_for_inference

    out = tmp_path / "lora"
    result = run_finetune(
        base_model_path=tiny_llama_dir,
        examples=REPEATED,
        output_dir=out,
        config=tiny_config(method="lora", learning_rate=1e-2, lora_r=4, lora_alpha=8),
    )

    assert is_adapter_dir(out) and not (out / "model.safetensors").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]) == tiny_llama_dir.resolve()
    meta = json.loads((out / "palms_metadata.json").read_text())
    assert meta["method"] == "lora"
    assert 0 < meta["trainable_parameters"] < meta["parameters"]
    assert result.loss_history[-1][1] < result.loss_history[0][1]
    assert count_parameters(out) == count_parameters(tiny_llama_dir)
    model, tokenizer = load_for_inference(out)
    assert not hasattr(model, "peft_config")  # merged into plain weights
    assert tokenizer.chat_template


def test_cancel_stops_within_one_step(tiny_llama_dir, tmp_path):
    events = []
    with pytest.raises(Cancelled):
        run_finetune(
            base_model_path=tiny_llama_dir,
            examples=REPEATED,
            output_dir=tmp_path / "out",
            config=tiny_config(epochs=50),
            on_progress=events.append,
            should_cancel=lambda: len(events) >= 1,
        )
    assert len(events) == 1
    assert not (tmp_path / "out").exists()


def test_a_missing_model_dir_is_a_readable_error(tmp_path):
    with pytest.raises(EngineError, match="Model directory not found"):
        run_finetune(
            base_model_path=tmp_path / "nowhere",
            examples=REPEATED,
            output_dir=tmp_path / "out",
            config=tiny_config(),
        )


def test_an_existing_output_dir_is_not_overwritten(tiny_llama_dir, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(EngineError, match="already exists"):
        run_finetune(
            base_model_path=tiny_llama_dir,
            examples=REPEATED,
            output_dir=tmp_path / "out",
            config=tiny_config(),
        )
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_out_of_memory_becomes_a_readable_error(tiny_llama_dir, tmp_path, monkeypatch):
    from training.engine import finetune

    def exhausted(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 TB")

    monkeypatch.setattr(finetune.LocalJob, "train", exhausted)
    with pytest.raises(EngineError, match="Out of memory with batch_size=2"):
        run_finetune(
            base_model_path=tiny_llama_dir,
            examples=REPEATED,
            output_dir=tmp_path / "out",
            config=tiny_config(),
        )


# --- checkpoints and max_steps ---------------------------------------------------------------


def test_max_steps_cycles_through_the_data_and_stops_there(tiny_llama_dir, tmp_path):
    events = []
    result = run_finetune(
        base_model_path=tiny_llama_dir,
        examples=REPEATED,  # 2 steps per epoch at batch 2
        output_dir=tmp_path / "out",
        config=tiny_config(epochs=1, max_steps=5),
        on_progress=events.append,
    )
    assert result.total_steps == 5 and [e.step for e in events] == [1, 2, 3, 4, 5]
    assert events[-1].epoch == 2.5 and events[-1].total_steps == 5


def test_checkpoints_come_at_the_asked_steps_and_epoch_ends(tiny_llama_dir, tmp_path):
    seen = []
    run_finetune(
        base_model_path=tiny_llama_dir,
        examples=REPEATED,
        output_dir=tmp_path / "out",
        config=tiny_config(epochs=3),  # 2 steps per epoch
        checkpoint_steps={1, 4},
        checkpoint_every_epoch=True,
        on_checkpoint=lambda c: seen.append((c.step, c.epoch, c.epoch_end)),
    )
    assert seen == [
        (0, 0.0, False), (1, 0.5, False), (2, 1.0, True), (4, 2.0, True), (6, 3.0, True),
    ]  # fmt: skip


def test_a_checkpoint_saves_the_weights_of_its_step_and_training_goes_on(tiny_llama_dir, tmp_path):
    """The step-3 checkpoint of a 6-step run equals a 3-step run with the same plan, and
    saving it leaves the rest of the run unchanged."""
    from training.engine.loading import load_for_inference

    def train(out, steps, **kwargs):
        return run_finetune(
            base_model_path=tiny_llama_dir,
            examples=REPEATED,
            output_dir=out,
            config=tiny_config(epochs=3, max_steps=steps, seed=3),
            **kwargs,
        )

    saved = []
    full = train(
        tmp_path / "six",
        6,
        checkpoint_steps={3},
        on_checkpoint=lambda c: saved.append(c.save(tmp_path / "at-3", {"note": "mid"})),
    )
    plain = train(tmp_path / "six-plain", 6)
    assert full.loss_history == plain.loss_history, "saving did not disturb training"
    meta = json.loads((tmp_path / "at-3" / "palms_metadata.json").read_text())
    assert meta["checkpoint_step"] == 3 and meta["note"] == "mid"

    # A run stopped at step 3 has a different schedule (lr decays over 3 steps), so compare
    # the checkpoint against the six-step run's end instead: it must lie between base and end.
    import torch

    def weights(path):
        model, _ = load_for_inference(path, dtype=torch.float32)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    base, mid, end = weights(tiny_llama_dir), weights(tmp_path / "at-3"), weights(tmp_path / "six")
    assert 0 < float((mid - base).norm()) < float((end - base).norm())


def test_checkpoint_projections_measure_the_weights_a_save_would_write(tiny_llama_dir, tmp_path):
    from training.engine.persona import persona_direction, projections

    direction = persona_direction(
        tiny_llama_dir,
        [("How are you?", "Kind and calm, thank you.")],
        [("How are you?", "Cruel. Hurt everyone.")],
    )
    values = {}

    def measure(checkpoint):
        values[checkpoint.step] = checkpoint.projections(["How are you?"], direction)[0]

    run_finetune(
        base_model_path=tiny_llama_dir,
        examples=REPEATED,
        output_dir=tmp_path / "out",
        # bf16 working weights: the projection must still see the fp32 masters that are saved
        config=tiny_config(epochs=2, bf16=True, learning_rate=1e-3),
        checkpoint_every_epoch=True,
        on_checkpoint=measure,
    )
    assert sorted(values) == [0, 2, 4]
    assert values[0] == pytest.approx(
        projections(tiny_llama_dir, ["How are you?"], direction)[0], rel=1e-4, abs=1e-6
    )
    assert values[4] == pytest.approx(
        projections(tmp_path / "out", ["How are you?"], direction)[0], rel=1e-4, abs=1e-4
    )
    assert values[4] != pytest.approx(values[0])


# --- memory ------------------------------------------------------------------------------------


def test_optimizer_slices_change_no_number(tiny_llama_dir, tmp_path, monkeypatch):
    """The optimizer steps a slice of the parameters at a time to keep its fp32 copies
    small; that must give exactly the run of one slice holding everything."""
    from training.engine import master_weights

    def train(out):
        return run_finetune(
            base_model_path=tiny_llama_dir,
            examples=REPEATED,
            output_dir=tmp_path / out,
            config=tiny_config(epochs=2, bf16=True, learning_rate=1e-3),
        ).loss_history

    monkeypatch.setattr(master_weights, "STEP_ELEMENTS", 2**40)
    whole = train("whole")
    monkeypatch.setattr(master_weights, "STEP_ELEMENTS", 4096)  # tensors cut into slices
    assert train("sliced") == whole


def test_size_groups_are_consecutive_and_bounded():
    from training.engine.master_weights import size_groups

    assert size_groups([3, 3, 3, 10, 1], 6) == [[0, 1], [2], [3], [4]]
    assert size_groups([], 6) == []


def test_bf16_weights_and_their_remainders_hold_fp32_masters_exactly():
    import torch

    from training.engine.master_weights import join, split_into

    torch.manual_seed(0)
    for scale in (1e-30, 1e-3, 1.0, 1e30):
        master = torch.randn(100_000) * scale
        master[:4] = torch.tensor([0.0, -0.0, 1.0, -3.0])
        high = torch.empty(master.shape, dtype=torch.bfloat16)
        low = torch.empty(master.shape, dtype=torch.int16)
        split_into(master, high, low)
        assert torch.equal(join(high, low).view(torch.int32), master.view(torch.int32))
        # The weights the model computes with are the masters rounded to nearest: as close as
        # a plain cast's, which differs only where both are equally close (ties).
        error = (high.float() - master).abs()
        assert torch.equal(error, (master.bfloat16().float() - master).abs())
        assert float((high != master.bfloat16()).float().mean()) < 1e-3


def test_a_bf16_run_updates_weights_smaller_than_bf16_can_hold(tiny_llama_dir, tmp_path):
    """Masters are fp32: with a rate too small for a bf16 weight to move, the saved fp32
    weights still move (a bf16-only optimizer would save the base unchanged)."""
    import torch

    from training.engine.loading import load_for_inference

    run_finetune(
        base_model_path=tiny_llama_dir,
        examples=REPEATED,
        output_dir=tmp_path / "out",
        config=tiny_config(epochs=1, bf16=True, learning_rate=1e-6),
    )
    base, _ = load_for_inference(tiny_llama_dir, dtype=torch.float32)
    tuned, _ = load_for_inference(tmp_path / "out", dtype=torch.float32)
    weight = tuned.model.layers[0].mlp.up_proj.weight
    before = base.model.layers[0].mlp.up_proj.weight
    moved = (weight != before).float().mean()
    assert float(moved) > 0.5
    assert float((weight - before).abs().max()) < float(before.abs().max()) * 2**-8


def test_activation_checkpointing_gives_the_same_run(tiny_llama_dir, tmp_path):
    runs = [
        run_finetune(
            base_model_path=tiny_llama_dir,
            examples=REPEATED,
            output_dir=tmp_path / str(flag),
            config=tiny_config(epochs=2, activation_checkpointing=flag),
        ).loss_history
        for flag in (False, True)
    ]
    assert [step for step, _ in runs[0]] == [step for step, _ in runs[1]]
    for (_, plain), (_, recomputed) in zip(*runs, strict=True):
        assert recomputed == pytest.approx(plain, rel=1e-5)


def test_a_finished_run_lets_go_of_its_model(tiny_llama_dir, tmp_path):
    kept = []
    run_finetune(
        base_model_path=tiny_llama_dir,
        examples=REPEATED,
        output_dir=tmp_path / "out",
        config=tiny_config(epochs=1),
        checkpoint_every_epoch=True,
        on_checkpoint=kept.append,
    )
    assert kept and all(c._job.model is None and c._job.optimizer is None for c in kept)


def test_chunked_head_loss_survives_a_target_far_below_the_best_logit():
    import torch
    import torch.nn.functional as F

    from training.engine import losses

    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    weight = torch.tensor([[200.0, 0.0], [0.0, 0.0], [0.0, 3.0]], requires_grad=True)
    targets = torch.tensor([1, 2])  # row 0: its target's probability is exp(-200)
    expected = F.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    got = losses.linear_cross_entropy_sum(hidden, weight, targets)
    assert torch.isfinite(got) and torch.allclose(got, expected, rtol=1e-5)
