"""Which backend samples a local model, and every output saying which did.

vLLM needs CUDA, so it never runs here: these tests cover the choice (with the probe that
says whether vLLM can run patched, never a stand-in ``vllm`` module), the requests we would
send it and the mapping of its documented result fields. The vLLM path itself is exercised
only by ``bench/gpu_check.py`` on a CUDA machine.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import transformers

from training import services
from training.engine import EngineError, vllm_sampling
from training.engine.generation import GenerationParams, encode_prompt, generate_local
from training.engine.loading import load_tokenizer
from training.engine.vllm_sampling import (
    Sampler,
    build_requests,
    choose_sampler,
    lora_rank_bound,
    to_generation,
)
from training.models import JobStatus

# --- the choice ----------------------------------------------------------------------------


def test_without_vllm_the_batched_generator_is_chosen_and_insisting_is_refused():
    reason = vllm_sampling.vllm_unavailable()
    assert reason  # this machine has neither vLLM nor CUDA
    assert choose_sampler("auto") == Sampler("transformers", transformers.__version__)
    assert choose_sampler("transformers").backend == "transformers"
    with pytest.raises(EngineError, match="SAMPLING_ENGINE is 'vllm', but"):
        choose_sampler("vllm")
    with pytest.raises(EngineError, match="Unknown sampling engine 'fast'"):
        choose_sampler("fast")


def test_where_vllm_can_run_auto_chooses_it_unless_told_not_to(monkeypatch):
    monkeypatch.setattr(vllm_sampling, "vllm_unavailable", lambda: None)
    monkeypatch.setattr(vllm_sampling, "package_version",
                        lambda name: {"vllm": "0.11.0"}.get(name, "x"))  # fmt: skip
    assert choose_sampler("auto") == Sampler("vllm", "0.11.0")
    assert str(choose_sampler("vllm")) == "vllm 0.11.0"
    assert choose_sampler("transformers").backend == "transformers"


# --- what vLLM would be sent, and what comes back --------------------------------------------


def test_requests_carry_our_chat_template_and_the_seeds_of_our_generator(tiny_llama_dir):
    tokenizer = load_tokenizer(tiny_llama_dir)
    prompts = ["Why is the sky blue?", "Tell me about the sea."]
    params = GenerationParams(temperature=0.7, top_p=0.9, max_new_tokens=4, seed=11)
    todo = [(0, 1), (1, 0), (1, 2)]
    requests = build_requests(tokenizer, prompts, todo, params, 11, {2}, "Be kind.")
    # The same outputs from our generator: the seed of each slot must be the same.
    ours = generate_local(tiny_llama_dir, prompts, n=3, params=params, system_prompt="Be kind.",
                          skip={(0, 0), (0, 2), (1, 1)})  # fmt: skip
    assert [r[1]["seed"] for r in requests] == [g.seed for g in ours]
    for (prompt, settings), (p, _s) in zip(requests, todo, strict=True):
        assert prompt == {"prompt_token_ids": encode_prompt(tokenizer, prompts[p], "Be kind.")}
        assert settings | {"seed": 0} == {
            "n": 1, "temperature": 0.7, "top_p": 0.9, "max_tokens": 4, "seed": 0,
            "stop_token_ids": [2], "skip_special_tokens": True,
        }  # fmt: skip


def test_a_completion_maps_to_one_output_counting_its_stop_token():
    # vLLM's CompletionOutput fields, as its docs name them: text, token_ids, finish_reason.
    stopped = SimpleNamespace(text=" Be kind. ", token_ids=[5, 6, 7, 2], finish_reason="stop")
    cut = SimpleNamespace(text="and so", token_ids=[8, 9], finish_reason="length")
    one = to_generation((3, 1), 99, stopped)
    assert (one.prompt_index, one.sample_index, one.seed) == (3, 1, 99)
    assert one.text == "Be kind." and one.tokens_generated == 4 and one.finish_reason == "stop"
    assert to_generation((0, 0), 1, cut).finish_reason == "length"


def test_an_adapter_rank_is_rounded_up_to_one_vllm_serves(tmp_path):
    def adapter(rank: int):
        (tmp_path / "adapter_config.json").write_text(json.dumps({"r": rank}))
        return tmp_path

    assert lora_rank_bound(adapter(4)) == 8 and lora_rank_bound(adapter(16)) == 16
    assert lora_rank_bound(adapter(48)) == 64
    with pytest.raises(EngineError, match="rank 600"):
        lora_rank_bound(adapter(600))


# --- recorded on every output ----------------------------------------------------------------


@pytest.mark.django_db
def test_every_output_records_the_backend_that_sampled_it(artifacts, tiny_base, admin_client_):
    version = services.base_version(tiny_base)
    job = services.sampling_launch(prompts=["Hello?", "Why?"], model_versions=[version],
                                   n_samples=2, max_new_tokens=4)  # fmt: skip
    services.sampling_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    recorded = set(job.generations.values_list("sampler_backend", "sampler_version"))
    assert recorded == {("transformers", transformers.__version__)}
    assert f"through transformers {transformers.__version__}" in job.log
    rows = admin_client_.get(f"/api/sampling-jobs/{job.pk}/outputs/").json()["results"]
    assert {row["sampler_backend"] for row in rows} == {"transformers"}
    page = admin_client_.get(job.get_absolute_url()).content.decode()
    assert f"sampled by transformers {transformers.__version__}" in page


@pytest.mark.django_db
def test_insisting_on_vllm_where_it_cannot_run_fails_the_job_and_stores_nothing(
    artifacts, tiny_base, settings
):
    settings.SAMPLING_ENGINE = "vllm"
    version = services.base_version(tiny_base)
    job = services.sampling_launch(prompts=["Hello?"], model_versions=[version], n_samples=1,
                                   max_new_tokens=4)  # fmt: skip
    services.sampling_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("SAMPLING_ENGINE is 'vllm', but")
    assert not job.generations.exists()
