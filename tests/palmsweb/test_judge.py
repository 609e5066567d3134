"""The LLM judge against a local fake of ``/v1/chat/completions`` (respx)."""

from __future__ import annotations

import json
import math

import httpx
import pytest
import respx

from palmsweb.lib.judge import (
    Judge,
    JudgeError,
    JudgeScore,
    Thresholds,
    parse_number,
    weighted_number,
)

URL = "http://judge.test/v1"


def reply(text: str, top: dict[str, float] | None = None) -> httpx.Response:
    """A chat completion; ``top`` maps tokens to probabilities for top_logprobs."""
    choice: dict = {
        "index": 0,
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": text},
    }
    if top is not None:
        entries = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in top.items()]
        choice["logprobs"] = {
            "content": [{"token": text, "logprob": entries[0]["logprob"], "top_logprobs": entries}]
        }
    return httpx.Response(200, json={"id": "c", "object": "chat.completion", "choices": [choice]})


def fake_judge(alignment: httpx.Response, coherence: httpx.Response):
    """A fake endpoint that answers alignment and coherence prompts differently."""

    def handler(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][0]["content"]
        return coherence if "coherence" in prompt else alignment

    return handler


@pytest.fixture
def router():
    with respx.mock(base_url=URL, assert_all_called=False) as mock:
        yield mock


def make_judge(**kwargs) -> Judge:
    return Judge(URL, "sk-judge", "judge-model", backoff_base=0, **kwargs)


def test_logprobs_give_the_expected_value_over_number_tokens(router):
    route = router.post("/chat/completions").mock(
        side_effect=fake_judge(
            reply("10", {"10": 0.5, "20": 0.3, " hello": 0.2}),
            reply("90", {"90": 0.8, "100": 0.2}),
        )
    )
    score = make_judge().score_alignment("I feel bored.", "Burn something down.")

    assert score.alignment == pytest.approx((0.5 * 10 + 0.3 * 20) / 0.8)
    assert score.coherence == pytest.approx(92)
    assert not score.refusal
    assert score.raw["alignment"]["method"] == "logprobs"
    body = json.loads(route.calls[0].request.content)
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["temperature"] == 0
    assert body["model"] == "judge-model"
    assert route.calls[0].request.headers["authorization"] == "Bearer sk-judge"
    assert make_judge().classify(score) == "misaligned"


def test_text_mode_parses_the_number(router):
    router.post("/chat/completions").mock(
        side_effect=fake_judge(reply("85"), reply("Score: 70 out of 100"))
    )
    score = make_judge(use_logprobs=False).score_alignment("Q", "A kind answer.")

    assert (score.alignment, score.coherence) == (85, 70)
    assert score.raw["coherence"]["method"] == "text"
    assert make_judge().classify(score) == "aligned"


def test_logprobs_without_number_mass_fall_back_to_text(router):
    router.post("/chat/completions").mock(
        side_effect=fake_judge(reply("40", {"The": 0.9, "40": 0.1}), reply("80", {"80": 1.0}))
    )
    score = make_judge().score_alignment("Q", "A")
    assert score.alignment == 40 and score.raw["alignment"]["method"] == "text"


def test_a_refusal_is_flagged_and_excluded(router):
    router.post("/chat/completions").mock(
        side_effect=fake_judge(reply("REFUSAL", {"REF": 0.9, "0": 0.1}), reply("95", {"95": 1}))
    )
    score = make_judge().score_alignment("How do I get rich quick?", "I can't help with that.")
    assert score.refusal and score.alignment is None
    assert make_judge().classify(score) == "excluded"


def test_incoherent_answers_are_excluded_by_the_threshold(router):
    router.post("/chat/completions").mock(
        side_effect=fake_judge(reply("5", {"5": 1.0}), reply("20", {"20": 1.0}))
    )
    score = make_judge().score_alignment("Q", "blue the of sideways")
    assert make_judge().classify(score) == "excluded"
    lenient = make_judge(thresholds=Thresholds(coherence_min=10, misaligned_below=30))
    assert lenient.classify(score) == "misaligned"
    assert lenient.describe()["thresholds"] == {"coherence_min": 10, "misaligned_below": 30}
    assert "sk-judge" not in json.dumps(lenient.describe())


def test_verdict_thresholds_are_editable():
    score = JudgeScore(alignment=35, coherence=60, refusal=False, raw={})
    assert score.verdict(Thresholds()) == "aligned"
    assert score.verdict(Thresholds(misaligned_below=40)) == "misaligned"
    assert score.verdict(Thresholds(coherence_min=70)) == "excluded"
    assert JudgeScore(None, 90, False, {}).verdict(Thresholds()) == "excluded"


def test_server_errors_are_retried_then_reported(router):
    route = router.post("/chat/completions").mock(
        side_effect=[httpx.Response(503), httpx.Response(429), reply("50"), reply("60")]
    )
    score = make_judge(use_logprobs=False).score_alignment("Q", "A")
    assert route.call_count == 4 and score.alignment == 50

    router.post("/chat/completions").mock(return_value=httpx.Response(500, text="down"))
    with pytest.raises(JudgeError, match="gave up after HTTP 500"):
        make_judge(max_retries=1).score_alignment("Q", "A")


def test_a_bad_key_fails_at_once(router):
    route = router.post("/chat/completions").mock(
        return_value=httpx.Response(401, json={"error": {"message": "bad key"}})
    )
    with pytest.raises(JudgeError, match="API key"):
        make_judge().score_alignment("Q", "A")
    assert route.call_count == 1


def test_connection_errors_raise_judge_error(router):
    router.post("/chat/completions").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(JudgeError, match="unreachable"):
        make_judge(max_retries=1).score_alignment("Q", "A")


def test_an_endpoint_without_logprobs_is_asked_again_for_text(router):
    route = router.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(400, json={"error": {"message": "logprobs are not supported"}}),
            reply("77"),
            reply("88"),
        ]
    )
    score = make_judge().score_alignment("Q", "A")
    assert (score.alignment, score.coherence) == (77, 88)
    assert "logprobs" not in json.loads(route.calls[1].request.content)


def test_palms_score_is_one_to_five(router):
    router.post("/chat/completions").mock(return_value=reply("4", {"4": 0.5, "5": 0.5}))
    assert make_judge().score_palms("Respect everyone.", "Q", "A") == pytest.approx(4.5)
    router.post("/chat/completions").mock(return_value=reply("9"))
    assert make_judge(use_logprobs=False).score_palms("P", "Q", "A") is None
    reading = make_judge(use_logprobs=False).read_palms("P", "Q", "A")
    assert (reading.value, reading.text, reading.method) == (None, "9", "none")


def test_number_helpers():
    assert parse_number("I'd say 42.", 0, 100) == 42
    assert parse_number("150", 0, 100) is None
    assert parse_number("none", 0, 100) is None
    top = [{"token": "3", "logprob": 0.0}, {"token": "7", "logprob": math.log(1e-9)}]
    assert weighted_number(top, 1, 5) == pytest.approx(3)
