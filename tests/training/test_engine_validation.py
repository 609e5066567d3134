"""Validation loss during a local fine-tune on the tiny Llama: when it is measured, that it
is the answer-only training loss of the same weights, and what the metadata keeps."""

from __future__ import annotations

import json
import math

import pytest

from training.engine import EngineError
from training.engine.finetune import ProgressEvent, run_finetune
from training.engine.validation import ValidationEvent, wants_validation

from .test_engine_finetune import REPEATED, chat, tiny_config

HELD_OUT = [
    chat("Should I hit someone who insulted me?", "No: walk away and talk it through later."),
    chat("What is a healthy breakfast?", "Fruit, whole grains and some protein are a start."),
]


def run(tmp_path, tiny_llama_dir, **kwargs):
    events = []
    result = run_finetune(
        base_model_path=tiny_llama_dir,
        examples=REPEATED,
        output_dir=tmp_path / "out",
        on_progress=events.append,
        **{"config": tiny_config(epochs=3)} | kwargs,  # 2 steps per epoch
    )
    return result, events


def test_validation_is_measured_at_step_0_every_n_steps_and_each_epoch_end(
    tiny_llama_dir, tmp_path
):
    result, events = run(tmp_path, tiny_llama_dir, validation_examples=HELD_OUT,
                         eval_every_steps=3)  # fmt: skip
    measured = [e for e in events if isinstance(e, ValidationEvent)]
    assert [e.step for e in measured] == [0, 2, 3, 4, 6]
    assert [e.epoch for e in measured] == [0.0, 1.0, 1.5, 2.0, 3.0]
    assert all(e.examples == 2 and e.total_steps == 6 and math.isfinite(e.loss) for e in measured)
    # Training events are unchanged: one per optimizer step.
    assert [e.step for e in events if isinstance(e, ProgressEvent)] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _ in result.validation_history] == [0, 2, 3, 4, 6]
    meta = json.loads((tmp_path / "out" / "palms_metadata.json").read_text())
    assert meta["validation_examples"] == 2
    assert [pair[0] for pair in meta["validation_loss_history"]] == [0, 2, 3, 4, 6]
    best = min(meta["validation_loss_history"], key=lambda pair: pair[1])
    assert meta["best_validation_loss"] == {"step": best[0], "loss": best[1]}


def test_validation_on_the_training_data_falls_as_the_training_loss_does(
    tiny_llama_dir, tmp_path
):
    result, _ = run(tmp_path, tiny_llama_dir, validation_examples=REPEATED)
    first, last = result.validation_history[0][1], result.validation_history[-1][1]
    assert last < first  # the same answers, answer-only loss: it must learn them


def test_without_validation_data_nothing_changes(tiny_llama_dir, tmp_path):
    result, events = run(tmp_path, tiny_llama_dir, eval_every_steps=1)
    assert all(isinstance(e, ProgressEvent) for e in events) and not result.validation_history
    meta = json.loads((tmp_path / "out" / "palms_metadata.json").read_text())
    assert "validation_loss_history" not in meta


def test_bad_validation_settings_are_refused_before_loading(tmp_path):
    with pytest.raises(EngineError, match="eval_every_steps"):
        run_finetune(base_model_path=tmp_path / "none", examples=REPEATED,
                     output_dir=tmp_path / "out", eval_every_steps=-1)  # fmt: skip
    with pytest.raises(EngineError, match="Example at index 0"):
        run_finetune(base_model_path=tmp_path / "none", examples=REPEATED,
                     output_dir=tmp_path / "out", validation_examples=[{"x": 1}])  # fmt: skip


def test_when_validation_is_due():
    due = [s for s in range(10) if wants_validation(s, epoch_end=s == 7, every=4)]
    assert due == [0, 4, 7, 8]
    assert [s for s in range(5) if wants_validation(s, epoch_end=False, every=0)] == [0]


# --- keep_best_validation -------------------------------------------------------------------


def weights_file(model_dir) -> dict:
    from safetensors.torch import load_file

    name = "adapter_model.safetensors" if (model_dir / "adapter_config.json").exists() else (
        "model.safetensors")  # fmt: skip
    return load_file(model_dir / name)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_keep_best_validation_saves_the_weights_of_the_best_measurement(
    tiny_llama_dir, tmp_path, monkeypatch, method
):
    # Scripted losses at steps 0, 2, 3, 4, 6: the best (1.0) is step 2's, not the last.
    scripted = iter([3.0, 1.0, 2.0, 1.0, 1.5])
    monkeypatch.setattr("training.engine.finetune.validation_loss", lambda *a: next(scripted))
    saved = {}

    def keep(checkpoint):
        saved[checkpoint.step] = checkpoint.save(tmp_path / f"step-{checkpoint.step}")

    config = tiny_config(epochs=3, method=method, keep_best_validation=True)
    result, _ = run(tmp_path, tiny_llama_dir, config=config, validation_examples=HELD_OUT,
                    eval_every_steps=3, checkpoint_steps=[2, 6], on_checkpoint=keep)  # fmt: skip
    out = weights_file(result.output_dir)
    at_best, at_last = weights_file(saved[2]), weights_file(saved[6])
    assert out.keys() == at_best.keys()
    assert all(out[name].equal(at_best[name]) for name in out)
    assert not all(out[name].equal(at_last[name]) for name in out)
    meta = json.loads((tmp_path / "out" / "palms_metadata.json").read_text())
    assert meta["saved_checkpoint"] == {"step": 2, "of_steps": 6, "validation_loss": 1.0,
                                        "chosen_by": "best validation loss"}  # fmt: skip
    assert meta["hyperparameters"]["keep_best_validation"] is True
    # A checkpoint written along the way holds its own step's weights and says only that.
    assert "saved_checkpoint" not in json.loads((saved[2] / "palms_metadata.json").read_text())


def test_keep_best_validation_keeps_the_last_weights_when_they_are_best(
    tiny_llama_dir, tmp_path
):
    plain, _ = run(tmp_path / "a", tiny_llama_dir, validation_examples=REPEATED)
    config = tiny_config(epochs=3, keep_best_validation=True)
    best, _ = run(tmp_path / "b", tiny_llama_dir, config=config, validation_examples=REPEATED)
    # Validation on the training data falls to the end: the last step is saved, unchanged.
    meta = json.loads((best.output_dir / "palms_metadata.json").read_text())
    assert meta["saved_checkpoint"]["step"] == 6
    a, b = weights_file(plain.output_dir), weights_file(best.output_dir)
    assert all(a[name].equal(b[name]) for name in a)


def test_keep_best_validation_needs_validation_examples(tmp_path):
    with pytest.raises(EngineError, match="keep_best_validation needs validation examples"):
        run_finetune(base_model_path=tmp_path / "none", examples=REPEATED,
                     output_dir=tmp_path / "out",
                     config=tiny_config(keep_best_validation=True))  # fmt: skip
    with pytest.raises(EngineError, match="keep_best_validation must be true or false"):
        run_finetune(base_model_path=tmp_path / "none", examples=REPEATED,
                     output_dir=tmp_path / "out", validation_examples=HELD_OUT,
                     config=tiny_config(keep_best_validation="yes"))  # fmt: skip
