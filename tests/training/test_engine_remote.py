"""OpenAI-compatible sampling and the OpenAI fine-tuning backend against respx mocks."""

from __future__ import annotations

import json

import httpx
import pytest

from training.engine import EngineError, GenerationParams
from training.engine.generation import output_seed
from training.engine.hosted.base import HostedJobSpec
from training.engine.hosted.openai import OpenAIFineTuneBackend
from training.engine.remote import generate_openai_compatible

OPENAI_TEST_URL = "https://api.openai.test/v1"  # the openai_mock fixture's default
PARAMS = GenerationParams(temperature=0.7, top_p=0.9, max_new_tokens=50, seed=11)


def completion(text: str, tokens: int = 5) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": 3 + tokens},
        },
    )


def error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "x", "code": None}})


def sample(client, prompts, **kwargs):
    options = {"n": 2, "params": PARAMS, "http_client": client, "backoff_base": 0}
    return generate_openai_compatible(
        OPENAI_TEST_URL, "sk-test", "gpt-test", prompts, **(options | kwargs)
    )


# --- sampling ------------------------------------------------------------------------------


def test_sampling_sends_one_seeded_request_per_output(openai_mock):
    router, client = openai_mock()

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return completion(f"{body['messages'][-1]['content']} / {body['seed']}")

    route = router.post("/chat/completions").mock(side_effect=answer)
    outputs = sample(client, ["A?", "B?"], system_prompt="Be kind.")

    assert route.call_count == 4
    body = json.loads(route.calls[0].request.content)
    assert body["model"] == "gpt-test" and body["max_tokens"] == 50
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert body["messages"][0] == {"role": "system", "content": "Be kind."}
    assert route.calls[0].request.headers["authorization"] == "Bearer sk-test"
    assert [(g.prompt_index, g.sample_index) for g in outputs] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for g in outputs:
        assert g.seed == output_seed(11, g.prompt_index, g.sample_index)
        assert g.text == f"{'AB'[g.prompt_index]}? / {g.seed}"
        assert g.tokens_generated == 5


def test_rate_limits_and_server_errors_are_retried(openai_mock):
    router, client = openai_mock()
    route = router.post("/chat/completions").mock(
        side_effect=[error(429, "slow down"), error(503, "busy"), completion("fine")]
    )
    [output] = sample(client, ["A?"], n=1)
    assert output.text == "fine"
    assert route.call_count == 3


def test_connection_errors_are_retried(openai_mock):
    router, client = openai_mock()
    route = router.post("/chat/completions").mock(
        side_effect=[httpx.ConnectError("refused"), completion("back")]
    )
    assert sample(client, ["A?"], n=1)[0].text == "back"
    assert route.call_count == 2


def test_an_invalid_key_fails_at_once_without_retries(openai_mock):
    router, client = openai_mock()
    route = router.post("/chat/completions").mock(return_value=error(401, "Incorrect API key"))
    with pytest.raises(EngineError, match="authentication failed .*Incorrect API key"):
        sample(client, ["A?"], n=1)
    assert route.call_count == 1


def test_persistent_server_errors_give_up_after_max_retries(openai_mock):
    router, client = openai_mock()
    route = router.post("/chat/completions").mock(return_value=error(500, "boom"))
    with pytest.raises(EngineError, match="gave up after 3 attempts"):
        sample(client, ["A?"], n=1, max_retries=2)
    assert route.call_count == 3


def test_remote_sampling_resumes_after_done_outputs(openai_mock):
    router, client = openai_mock()
    route = router.post("/chat/completions").mock(return_value=completion("x"))
    stored = []
    outputs = sample(client, ["A?", "B?"], skip={(0, 0), (1, 1)}, on_batch=stored.extend)
    assert {(g.prompt_index, g.sample_index) for g in outputs} == {(0, 1), (1, 0)}
    assert route.call_count == 2 and len(stored) == 2


def test_outputs_received_before_a_failure_are_still_reported(openai_mock):
    router, client = openai_mock()

    def answer(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        return error(400, "prompt refused") if prompt == "B?" else completion("ok")

    router.post("/chat/completions").mock(side_effect=answer)
    stored = []
    with pytest.raises(EngineError, match="HTTP 400: prompt refused"):
        sample(client, ["A?", "B?", "C?"], n=1, max_concurrency=1, on_batch=stored.extend)
    # A finished before B failed; C is dropped unless it was already in flight.
    reported = {g.prompt_index for g in stored}
    assert 0 in reported and 1 not in reported


# --- fine-tuning ---------------------------------------------------------------------------


def job(status: str, **extra) -> dict:
    return {
        "id": "ftjob-1",
        "object": "fine_tuning.job",
        "created_at": 1,
        "model": "gpt-4o-mini",
        "organization_id": "org",
        "result_files": [],
        "seed": 3,
        "status": status,
        "training_file": "file-1",
        "hyperparameters": {"n_epochs": 3},
        "fine_tuned_model": None,
        "trained_tokens": None,
        "error": None,
        **extra,
    }


def event(n: int, message: str) -> dict:
    return {
        "id": f"ftevent-{n}",
        "object": "fine_tuning.job.event",
        "created_at": 100 + n,
        "level": "info",
        "message": message,
        "type": "message",
    }


def checkpoint(step: int, loss: float) -> dict:
    return {
        "id": f"ftckpt-{step}",
        "object": "fine_tuning.job.checkpoint",
        "created_at": step,
        "fine_tuned_model_checkpoint": f"ft:gpt-4o-mini:org::ckpt-{step}",
        "fine_tuning_job_id": "ftjob-1",
        "step_number": step,
        "metrics": {"step": step, "train_loss": loss},
    }


def page(items: list[dict]) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": items, "has_more": False})


def backend(client) -> OpenAIFineTuneBackend:
    return OpenAIFineTuneBackend(
        "sk-test", base_url=OPENAI_TEST_URL, http_client=client, backoff_base=0
    )


def test_upload_and_create_a_supervised_job(openai_mock):
    router, client = openai_mock()
    upload = router.post("/files").mock(
        return_value=httpx.Response(
            200,
            json={
                "id": "file-1",
                "object": "file",
                "bytes": 10,
                "created_at": 1,
                "filename": "train.jsonl",
                "purpose": "fine-tune",
                "status": "processed",
            },
        )
    )
    create = router.post("/fine_tuning/jobs").mock(
        return_value=httpx.Response(200, json=job("validating_files"))
    )
    remote = backend(client)

    file_id = remote.upload_training_file(b'{"messages": []}\n')
    job_id = remote.create_job(
        HostedJobSpec(
            model="gpt-4o-mini",
            training_file=file_id,
            epochs=3,
            learning_rate_multiplier=0.5,
            seed=3,
            suffix="palms-" + "x" * 100,
            metadata={"palmsweb_job": 7},
        )
    ).id

    assert (file_id, job_id) == ("file-1", "ftjob-1")
    multipart = upload.calls[0].request.content
    assert b'name="purpose"' in multipart and b"fine-tune" in multipart
    body = json.loads(create.calls[0].request.content)
    assert body["training_file"] == "file-1" and body["seed"] == 3
    assert body["method"] == {
        "type": "supervised",
        "supervised": {
            "hyperparameters": {
                "n_epochs": 3,
                "batch_size": "auto",
                "learning_rate_multiplier": 0.5,
            }
        },
    }
    assert len(body["suffix"]) == 64
    assert body["metadata"] == {"palmsweb_job": "7"}


def test_poll_reports_new_events_checkpoints_and_success(openai_mock):
    router, client = openai_mock()
    retrieve = router.get("/fine_tuning/jobs/ftjob-1")
    events = router.get("/fine_tuning/jobs/ftjob-1/events")
    router.get("/fine_tuning/jobs/ftjob-1/checkpoints").mock(
        return_value=page([checkpoint(20, 0.8), checkpoint(10, 1.2)])
    )
    remote = backend(client)

    retrieve.mock(return_value=httpx.Response(200, json=job("running")))
    events.mock(return_value=page([event(2, "Step 10/30"), event(1, "Job started")]))
    first = remote.poll("ftjob-1")
    assert first.status == "running" and not first.finished
    assert [e.message for e in first.events] == ["Job started", "Step 10/30"]
    assert first.events_cursor == "ftevent-2"
    assert [(c.step_number, c.train_loss) for c in first.checkpoints] == [(10, 1.2), (20, 0.8)]

    retrieve.mock(
        return_value=httpx.Response(
            200,
            json=job("succeeded", fine_tuned_model="ft:gpt-4o-mini:org::abc", trained_tokens=9000),
        )
    )
    events.mock(
        return_value=page(
            [
                event(4, "Job succeeded"),
                event(3, "Step 30/30"),
                event(2, "Step 10/30"),
                event(1, "Job started"),
            ]
        )
    )
    second = remote.poll("ftjob-1", after=first.events_cursor)
    assert [e.message for e in second.events] == ["Step 30/30", "Job succeeded"]
    assert second.finished and second.fine_tuned_model == "ft:gpt-4o-mini:org::abc"
    assert second.trained_tokens == 9000 and second.events_cursor == "ftevent-4"

    events.mock(return_value=page([event(4, "Job succeeded")]))
    assert remote.poll("ftjob-1", after="ftevent-4").events == []


def test_a_failed_job_reports_its_error(openai_mock):
    router, client = openai_mock()
    router.get("/fine_tuning/jobs/ftjob-1").mock(
        return_value=httpx.Response(
            200,
            json=job(
                "failed",
                error={
                    "code": "invalid_training_file",
                    "message": "Line 3 has no assistant",
                    "param": "training_file",
                },
            ),
        )
    )
    router.get("/fine_tuning/jobs/ftjob-1/events").mock(return_value=page([]))
    router.get("/fine_tuning/jobs/ftjob-1/checkpoints").mock(return_value=page([]))
    state = backend(client).poll("ftjob-1")
    assert state.status == "failed" and state.finished
    assert state.error == "Line 3 has no assistant"


def test_cancel_a_job(openai_mock):
    router, client = openai_mock()
    route = router.post("/fine_tuning/jobs/ftjob-1/cancel").mock(
        return_value=httpx.Response(200, json=job("cancelled"))
    )
    assert backend(client).cancel("ftjob-1") == "cancelled"
    assert route.call_count == 1


def test_fine_tune_calls_retry_429_and_fail_fast_on_403(openai_mock):
    router, client = openai_mock()
    route = router.post("/fine_tuning/jobs").mock(
        side_effect=[error(429, "Too many requests"), httpx.Response(200, json=job("queued"))]
    )
    assert backend(client).create_job(HostedJobSpec("gpt-4o-mini", "file-1")).id == "ftjob-1"
    assert route.call_count == 2

    router.post("/files").mock(return_value=error(403, "Not allowed to fine-tune"))
    with pytest.raises(EngineError, match="authentication failed .*Not allowed"):
        backend(client).upload_training_file(b"{}\n")


def test_a_bad_request_is_not_retried(openai_mock):
    router, client = openai_mock()
    route = router.post("/fine_tuning/jobs").mock(
        return_value=error(400, "Model gpt-x is not available for fine-tuning")
    )
    with pytest.raises(EngineError, match="HTTP 400: Model gpt-x is not available"):
        backend(client).create_job(HostedJobSpec("gpt-x", "file-1"))
    assert route.call_count == 1


def test_a_preference_job_asks_openai_for_dpo_with_its_beta(openai_mock):
    router, client = openai_mock()
    create = router.post("/fine_tuning/jobs").mock(
        return_value=httpx.Response(200, json=job("validating_files"))
    )
    spec = HostedJobSpec("gpt-4.1-mini", "file-1", kind="preference", dpo_beta=0.1, epochs=2)
    assert backend(client).create_job(spec).id == "ftjob-1"
    method = json.loads(create.calls[0].request.content)["method"]
    assert method == {
        "type": "dpo",
        "dpo": {
            "hyperparameters": {
                "n_epochs": 2,
                "batch_size": "auto",
                "learning_rate_multiplier": "auto",
                "beta": 0.1,
            }
        },
    }
