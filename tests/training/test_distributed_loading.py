"""A sharded (FSDP2) fine-tune reads the weights on rank 0 only: the other ranks build on the
meta device and receive their shards by broadcast. CPU, gloo, 2 ranks, the tiny Llama."""

from __future__ import annotations

import json
import shutil

import pytest

from training.engine.distributed_launch import run_distributed_finetune
from training.engine.distributed_plan import DistributedPlan
from training.engine.finetune import run_finetune

from .test_distributed import EXAMPLES, config


def test_a_meta_build_reads_no_weights_and_has_the_loaded_shapes(tiny_llama_dir, tmp_path):
    import torch

    from training.engine.loading import load_for_training

    loaded, _ = load_for_training(tiny_llama_dir, method="full")
    weightless = tmp_path / "weightless"
    shutil.copytree(tiny_llama_dir, weightless)
    (weightless / "model.safetensors").unlink()  # a meta build must not need it
    built, _ = load_for_training(weightless, method="full", device=torch.device("meta"))
    assert {p.device.type for p in built.parameters()} == {"meta"}
    assert {n: p.shape for n, p in built.named_parameters()} == {
        n: p.shape for n, p in loaded.named_parameters()
    }
    adapted, _ = load_for_training(weightless, method="lora", device=torch.device("meta"))
    assert {p.device.type for p in adapted.parameters()} == {"meta"}


@pytest.mark.distributed
@pytest.mark.parametrize("method", ["full", "lora"])
def test_fsdp_from_one_loaded_copy_trains_like_one_process(tiny_llama_dir, tmp_path, method):
    # Were rank 1's shards or buffers (the rotary frequencies) left as the meta device's
    # unset memory, its half of every step would differ and the curves would part. The
    # tiny random model barely uses positions, so the bound is tight.
    recipe = config(method=method, lora_dropout=0.0, epochs=1)
    single = run_finetune(base_model_path=tiny_llama_dir, examples=EXAMPLES,
                          output_dir=tmp_path / "single", config=recipe)  # fmt: skip
    sharded = run_distributed_finetune(
        base_model_path=tiny_llama_dir, examples=EXAMPLES, output_dir=tmp_path / "fsdp",
        config=recipe, plan=DistributedPlan(nproc_per_node=2, strategy="fsdp"),
    )  # fmt: skip
    gaps = [abs(two - one) / one for (_, one), (_, two) in
            zip(single.loss_history, sharded.loss_history, strict=True)]  # fmt: skip
    # Measured here: gaps of 9e-8 (the saved history keeps 6 decimals); with rank 1's
    # rotary buffers left unset the first step alone is 1.1e-4 off.
    assert max(gaps) < 1e-5
    meta = json.loads((tmp_path / "fsdp" / "palms_metadata.json").read_text())
    assert meta["distributed"]["loading"].startswith("rank 0 read the weights")
