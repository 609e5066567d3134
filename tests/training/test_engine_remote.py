"""OpenAI-compatible sampling and the OpenAI fine-tuning backend, through the real ``openai``
SDK, against a local fake OpenAI that speaks its REST protocol (tests/fake_openai.py)."""

from __future__ import annotations

import pytest

from tests.fake_openai import API_KEY, fake_openai  # noqa: F401  (the fixture)
from training.engine import EngineError, GenerationParams
from training.engine.errors import NotFoundAtProvider
from training.engine.generation import output_seed
from training.engine.hosted.base import HostedJobSpec
from training.engine.hosted.openai import OpenAIFineTuneBackend
from training.engine.remote import generate_openai_compatible

PARAMS = GenerationParams(temperature=0.7, top_p=0.9, max_new_tokens=50, seed=11)
CHAT = "/v1/chat/completions"


@pytest.fixture
def fake(fake_openai):  # noqa: F811
    return fake_openai


def sample(fake, prompts, model="gpt-4o-mini", **kwargs):
    options = {"n": 2, "params": PARAMS, "backoff_base": 0}
    return generate_openai_compatible(fake.base_url, API_KEY, model, prompts, **(options | kwargs))


# --- sampling ------------------------------------------------------------------------------


def test_sampling_sends_one_seeded_request_per_output(fake):
    outputs = sample(fake, ["A?", "B?"], system_prompt="Be kind.")

    sent = fake.calls("POST", CHAT)
    assert len(sent) == 4
    body = sent[0].json()
    assert body["model"] == "gpt-4o-mini" and body["max_tokens"] == 50
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert body["messages"][0] == {"role": "system", "content": "Be kind."}
    assert sent[0].headers["authorization"] == f"Bearer {API_KEY}"
    assert [(g.prompt_index, g.sample_index) for g in outputs] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for g in outputs:
        assert g.seed == output_seed(11, g.prompt_index, g.sample_index)
        prompt = "AB"[g.prompt_index]
        assert g.text == f"[gpt-4o-mini] answer to: {prompt}? (seed {g.seed})"
        assert g.tokens_generated == 9


def test_rate_limits_and_server_errors_are_retried(fake):
    fake.fault(CHAT, 429)
    fake.fault(CHAT, 503)
    [output] = sample(fake, ["A?"], n=1)
    assert output.text.startswith("[gpt-4o-mini]")
    assert len(fake.calls("POST", CHAT)) == 3


def test_a_rate_limits_retry_after_is_waited_for(fake):
    fake.fault(CHAT, 429, headers={"retry-after": "0.4"})
    sample(fake, ["A?"], n=1)  # backoff_base 0: only the server's retry-after makes it wait
    first, second = fake.calls("POST", CHAT)
    assert second.at - first.at >= 0.4


def test_dropped_connections_are_retried(fake):
    fake.fault(CHAT, 0)
    assert sample(fake, ["A?"], n=1)[0].text.startswith("[gpt-4o-mini]")
    assert len(fake.calls("POST", CHAT)) == 2


def test_an_invalid_key_fails_at_once_without_retries(fake):
    fake.api_key = "sk-another"
    with pytest.raises(EngineError, match="authentication failed .*Incorrect API key"):
        sample(fake, ["A?"], n=1)
    assert len(fake.requests) == 1


def test_persistent_server_errors_give_up_after_max_retries(fake):
    fake.fault(CHAT, 500, times=100)
    with pytest.raises(EngineError, match=r"gave up after 3 attempts \(HTTP 500: The server"):
        sample(fake, ["A?"], n=1, max_retries=2)
    assert len(fake.calls("POST", CHAT)) == 3


def test_a_bad_request_fails_with_the_servers_message_without_retries(fake):
    fake.fault(CHAT, 400, {"error": {"message": "prompt refused", "type": "x", "code": None}})
    with pytest.raises(EngineError, match="HTTP 400: prompt refused"):
        sample(fake, ["A?"], n=1)
    assert len(fake.calls("POST", CHAT)) == 1


def test_remote_sampling_resumes_after_done_outputs(fake):
    stored = []
    outputs = sample(fake, ["A?", "B?"], skip={(0, 0), (1, 1)}, on_batch=stored.extend)
    assert {(g.prompt_index, g.sample_index) for g in outputs} == {(0, 1), (1, 0)}
    assert len(fake.calls("POST", CHAT)) == 2 and len(stored) == 2


def test_a_model_that_disappears_mid_sampling_fails_and_keeps_what_came_before(fake):
    fake.retire("gpt-4o-mini", after=1)
    stored = []
    with pytest.raises(NotFoundAtProvider, match="not served there .*model_not_found") as gone:
        sample(fake, ["A?", "B?", "C?"], n=1, max_concurrency=1, on_batch=stored.extend)
    assert "does not exist or you do not have access to it" in str(gone.value)
    # A finished before the model went; B failed; C, if it was already on its way, too.
    assert [g.prompt_index for g in stored] == [0]


# --- fine-tuning ---------------------------------------------------------------------------


def backend(fake, key: str = API_KEY) -> OpenAIFineTuneBackend:
    return OpenAIFineTuneBackend(key, base_url=fake.base_url, backoff_base=0)


def created_job(fake, remote: OpenAIFineTuneBackend, **spec) -> str:
    file_id = remote.upload_training_file(b'{"messages": []}\n')
    spec = HostedJobSpec(model="gpt-4o-mini", training_file=file_id, **spec)
    return remote.create_job(spec).id


def test_upload_and_create_a_supervised_job(fake):
    remote = backend(fake)
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

    uploaded = fake.files[file_id]
    assert (uploaded["purpose"], uploaded["filename"]) == ("fine-tune", "train.jsonl")
    assert uploaded["content"] == b'{"messages": []}\n'
    body = fake.jobs[job_id]["request"]
    assert body["training_file"] == file_id and body["seed"] == 3
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
    assert len(body["suffix"]) == 64  # OpenAI refuses a longer one
    assert body["metadata"] == {"palmsweb_job": "7"}  # and values that are not strings


def test_an_empty_training_file_is_refused_before_calling_openai(fake):
    with pytest.raises(EngineError, match="training file is empty"):
        backend(fake).upload_training_file(b"\n")
    assert fake.requests == []


def test_poll_reports_new_events_checkpoints_and_success(fake):
    remote = backend(fake)
    job_id = created_job(fake, remote)
    fake.advance(
        job_id,
        "running",
        events=["Step 10/30"],
        checkpoints=[{"step": 10, "train_loss": 1.2}, {"step": 20, "train_loss": 0.8}],
    )
    first = remote.poll(job_id)
    assert first.status == "running" and not first.finished
    assert [e.message for e in first.events] == [
        f"Validating training file: {fake.jobs[job_id]['training_file']}",
        f"Created fine-tuning job: {job_id}",
        "Step 10/30",
    ]
    assert [(c.step_number, c.train_loss) for c in first.checkpoints] == [(10, 1.2), (20, 0.8)]
    assert first.losses == [(10, 1.2), (20, 0.8)]

    fake.advance(job_id, "succeeded", events=["Step 30/30", "Job succeeded"], trained_tokens=900)
    second = remote.poll(job_id, after=first.events_cursor)
    assert [e.message for e in second.events] == ["Step 30/30", "Job succeeded"]
    assert second.finished and second.outcome == "succeeded"
    assert second.fine_tuned_model == fake.jobs[job_id]["fine_tuned_model"]
    assert second.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:fake-org:")
    assert second.trained_tokens == 900

    assert remote.poll(job_id, after=second.events_cursor).events == []


def test_events_beyond_one_page_are_fetched_up_to_the_cursor(fake):
    remote = backend(fake)
    job_id = created_job(fake, remote)
    fake.advance(job_id, "running", events=[f"Step {n}" for n in range(150)])
    first = remote.poll(job_id)
    assert len(first.events) == 152 and first.events[-1].message == "Step 149"
    pages = fake.calls("GET", f"/v1/fine_tuning/jobs/{job_id}/events")
    assert len(pages) == 2 and pages[1].query["after"]  # the SDK followed the cursor
    fake.advance(job_id, "running", events=["Step 150"])
    assert [e.message for e in remote.poll(job_id, after=first.events_cursor).events] == [
        "Step 150"
    ]


def test_a_failed_job_reports_its_error(fake):
    remote = backend(fake)
    job_id = created_job(fake, remote)
    fake.advance(
        job_id,
        "failed",
        error={"code": "invalid_training_file", "message": "Line 3 has no assistant"},
    )
    state = remote.poll(job_id)
    assert state.status == "failed" and state.finished
    assert state.error == "Line 3 has no assistant"


def test_cancel_a_job_and_a_finished_one_cannot_be(fake):
    remote = backend(fake)
    job_id = created_job(fake, remote)
    assert remote.cancel(job_id) == "cancelled"
    assert remote.poll(job_id).outcome == "cancelled"
    with pytest.raises(EngineError, match="HTTP 400: Job has already completed"):
        remote.cancel(job_id)


def test_fine_tune_calls_retry_429_and_fail_fast_on_403(fake):
    fake.fault("/v1/fine_tuning/jobs", 429)
    job_id = created_job(fake, backend(fake))
    assert job_id in fake.jobs
    assert len(fake.calls("POST", "/v1/fine_tuning/jobs")) == 2

    fake.fault("/v1/files", 403, {"error": {"message": "Not allowed to fine-tune"}}, times=5)
    with pytest.raises(EngineError, match="authentication failed .*Not allowed"):
        backend(fake).upload_training_file(b"{}\n")
    assert len(fake.calls("POST", "/v1/files")) == 2  # one before, one refused


def test_a_model_openai_does_not_fine_tune_is_refused_without_retries(fake):
    with pytest.raises(EngineError, match="HTTP 400: Model gpt-x is not available"):
        backend(fake).create_job(HostedJobSpec("gpt-x", "file-1"))
    assert len(fake.calls("POST", "/v1/fine_tuning/jobs")) == 1


def test_a_job_openai_does_not_know_is_not_found(fake):
    with pytest.raises(NotFoundAtProvider, match="HTTP 404: Could not find fine-tune"):
        backend(fake).poll("ftjob-gone")


def test_a_preference_job_asks_openai_for_dpo_with_its_beta(fake):
    remote = backend(fake)
    job_id = created_job(fake, remote, kind="preference", dpo_beta=0.1, epochs=2)
    assert fake.jobs[job_id]["request"]["method"] == {
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


def test_the_shutdown_date_comes_from_the_model_listing(fake):
    remote = backend(fake)
    assert remote.model_shutdown_date("gpt-4o-mini") is None
    fake.list_shutdown("gpt-4o-mini", "2027-01-14")
    assert remote.model_shutdown_date("gpt-4o-mini") == "2027-01-14"
    fake.retire("gpt-4o-mini")
    with pytest.raises(NotFoundAtProvider, match="model_not_found"):
        remote.model_shutdown_date("gpt-4o-mini")
    assert len(fake.calls("GET", "/v1/models/gpt-4o-mini")) == 3  # one attempt each
