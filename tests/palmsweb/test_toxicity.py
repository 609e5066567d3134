"""Toxicity scorers: the offline model for real, Perspective and OpenAI against local fakes."""

from __future__ import annotations

import importlib
import json

import httpx
import openai
import pytest
import respx

from palmsweb.lib import toxicity
from palmsweb.lib.toxicity import (
    OfflineProfanityScorer,
    OpenAIModerationScorer,
    PerspectiveScorer,
    Scorer,
    ScorerConfigError,
    get_scorer,
    truncate_utf8,
)

ABUSIVE = "You are a worthless idiot and everyone hates you, shut up."
BENIGN = "Thank you for explaining how to repot the basil, it worked well."


# --------------------------------------------------------------------------- registry


def test_registry_builds_each_scorer_and_offline_is_the_default():
    default = get_scorer()
    assert isinstance(default, OfflineProfanityScorer)
    assert isinstance(default, Scorer)
    assert isinstance(get_scorer("perspective", api_key="k"), PerspectiveScorer)
    assert isinstance(get_scorer("openai", api_key="k"), OpenAIModerationScorer)
    with pytest.raises(ValueError, match="unknown toxicity scorer"):
        get_scorer("nope")


def test_every_scorer_records_name_and_version():
    for scorer in (get_scorer(), get_scorer("perspective", api_key="k")):
        assert scorer.name and scorer.version
    assert get_scorer().version.startswith(importlib.metadata.version("alt-profanity-check"))


# --------------------------------------------------------------------------- offline


def test_offline_scorer_ranks_abuse_above_a_benign_sentence():
    progress = []
    scores = get_scorer().score_many(
        [ABUSIVE, BENIGN], on_progress=lambda d, t: progress.append((d, t))
    )
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > 0.5 > scores[1]
    assert progress[-1] == (2, 2)


def test_offline_scorer_gives_none_not_zero_for_a_non_text():
    details = OfflineProfanityScorer(batch_size=1).score_details([BENIGN, None])
    assert details[0].value is not None
    assert details[1].value is None and details[1].error


# --------------------------------------------------------------------------- Perspective

BASE = "https://commentanalyzer.googleapis.com/v1alpha1"
ANALYZE = f"{BASE}/comments:analyze"


class FakeTime:
    """A clock and a sleep that only move when told to, so limits run without waiting."""

    def __init__(self):
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def perspective_json(value: float) -> dict:
    return {
        "attributeScores": {
            "TOXICITY": {
                "spanScores": [{"begin": 0, "end": 10, "score": {"value": value}}],
                "summaryScore": {"value": value, "type": "PROBABILITY"},
            }
        },
        "languages": ["en"],
        "detectedLanguages": ["en"],
    }


@pytest.fixture
def fake_time():
    return FakeTime()


@pytest.fixture
def perspective(fake_time):
    def make(**kwargs):
        kwargs.setdefault("max_retries", 3)
        return PerspectiveScorer(
            "test-key", http_client=httpx.Client(), sleep=fake_time.sleep,
            clock=fake_time.clock, **kwargs,
        )  # fmt: skip

    return make


@respx.mock
def test_perspective_sends_the_documented_request(perspective):
    route = respx.post(ANALYZE).mock(return_value=httpx.Response(200, json=perspective_json(0.8)))
    assert perspective().score_many(["you are awful"]) == [pytest.approx(0.8)]
    request = route.calls.last.request
    assert request.url.params["key"] == "test-key"
    assert json.loads(request.content) == {
        "comment": {"text": "you are awful"},
        "requestedAttributes": {"TOXICITY": {}},
        "languages": ["en"],
        "doNotStore": True,
    }


@respx.mock
def test_perspective_spaces_requests_at_least_one_second_apart(perspective, fake_time):
    started: list[float] = []

    def answer(request):
        started.append(fake_time.now)
        fake_time.now += 0.25  # the call itself takes a quarter of a second
        return httpx.Response(200, json=perspective_json(0.1))

    respx.post(ANALYZE).mock(side_effect=answer)
    progress = []
    scores = perspective().score_many(
        ["a", "b", "c", "d"], on_progress=lambda d, t: progress.append(d)
    )
    assert scores == [pytest.approx(0.1)] * 4
    gaps = [b - a for a, b in zip(started, started[1:], strict=False)]
    assert all(gap >= 1.0 for gap in gaps)
    assert gaps == [pytest.approx(1.0)] * 3  # and no slower than it must be
    assert fake_time.sleeps == [pytest.approx(0.75)] * 3
    assert progress == [1, 2, 3, 4]


@respx.mock
def test_perspective_qps_setting_changes_the_spacing(perspective, fake_time):
    started: list[float] = []

    def answer(request):
        started.append(fake_time.now)
        return httpx.Response(200, json=perspective_json(0.1))

    respx.post(ANALYZE).mock(side_effect=answer)
    perspective(qps=0.5).score_many(["a", "b"])
    assert started[1] - started[0] == pytest.approx(2.0)


def test_truncate_utf8_never_splits_a_character():
    assert truncate_utf8("short", 3000) == ("short", False)
    cut, truncated = truncate_utf8("a" + "€" * 1000, 3000)  # 3001 bytes, € is 3 bytes
    assert truncated and cut == "a" + "€" * 999 and len(cut.encode()) == 2998


@respx.mock
def test_perspective_truncates_texts_over_3000_bytes_and_records_it(perspective):
    route = respx.post(ANALYZE).mock(return_value=httpx.Response(200, json=perspective_json(0.2)))
    long_text = "é" * 2000  # 4000 bytes
    [detail] = perspective().score_details([long_text])
    sent = json.loads(route.calls.last.request.content)["comment"]["text"]
    assert len(sent.encode("utf-8")) == 3000 and sent == "é" * 1500
    assert detail.truncated and detail.value == pytest.approx(0.2)
    [short] = perspective().score_details(["fine"])
    assert not short.truncated


@respx.mock
def test_perspective_backs_off_on_429_then_succeeds(perspective, fake_time):
    route = respx.post(ANALYZE).mock(
        side_effect=[
            httpx.Response(429, json={"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}),
            httpx.Response(200, json=perspective_json(0.6)),
        ]
    )
    assert perspective(backoff=2.0).score_many(["x"]) == [pytest.approx(0.6)]
    assert route.call_count == 2
    assert fake_time.sleeps[0] == pytest.approx(2.0)


@respx.mock
def test_perspective_honours_a_longer_retry_after(perspective, fake_time):
    respx.post(ANALYZE).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(200, json=perspective_json(0.3)),
        ]
    )
    assert perspective().score_many(["x"]) == [pytest.approx(0.3)]
    assert fake_time.sleeps[0] == pytest.approx(7.0)


@respx.mock
def test_perspective_persistent_5xx_gives_none_after_exponential_backoff(perspective, fake_time):
    route = respx.post(ANALYZE).mock(return_value=httpx.Response(503))
    [detail] = perspective(max_retries=3).score_details(["x"])
    assert detail.value is None and "503" in detail.error
    assert route.call_count == 4  # the first try and 3 retries
    assert fake_time.sleeps == [pytest.approx(1.0), pytest.approx(2.0), pytest.approx(4.0)]


@respx.mock
def test_perspective_retries_network_errors(perspective):
    respx.post(ANALYZE).mock(
        side_effect=[httpx.ConnectError("reset"), httpx.Response(200, json=perspective_json(0.4))]
    )
    assert perspective().score_many(["x"]) == [pytest.approx(0.4)]


@respx.mock
def test_perspective_missing_attribute_scores_gives_none(perspective):
    respx.post(ANALYZE).mock(
        return_value=httpx.Response(200, json={"languages": ["en"], "detectedLanguages": []})
    )
    [detail] = perspective().score_details(["x"])
    assert detail.value is None and "TOXICITY" in detail.error


@respx.mock
def test_perspective_400_gives_none_without_retrying(perspective):
    error = {
        "error": {
            "code": 400,
            "message": "Attribute TOXICITY does not support request languages: xx",
            "status": "INVALID_ARGUMENT",
            "details": [{"errorType": "LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE"}],
        }
    }
    route = respx.post(ANALYZE).mock(return_value=httpx.Response(400, json=error))
    assert perspective().score_many(["ein Text", "un texte"]) == [None, None]
    assert route.call_count == 2


@respx.mock
def test_perspective_empty_text_is_none_without_a_request(perspective):
    route = respx.post(ANALYZE)
    assert perspective().score_many(["", "   "]) == [None, None]
    assert not route.called


@respx.mock
@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(403, json={"error": {"code": 403, "status": "PERMISSION_DENIED"}}),
        httpx.Response(
            400,
            json={"error": {"code": 400, "details": [{"reason": "API_KEY_INVALID"}]}},
        ),
    ],
)
def test_perspective_rejected_key_fails_loudly(perspective, response):
    respx.post(ANALYZE).mock(return_value=response)
    with pytest.raises(ScorerConfigError):
        perspective().score_many(["x"])


def test_perspective_needs_a_key():
    with pytest.raises(ScorerConfigError):
        PerspectiveScorer("")


@respx.mock
def test_perspective_caps_a_huge_retry_after(perspective, fake_time):
    respx.post(ANALYZE).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "86400"}),
            httpx.Response(200, json=perspective_json(0.3)),
        ]
    )
    assert perspective(max_backoff=30).score_many(["x"]) == [pytest.approx(0.3)]
    assert fake_time.sleeps[0] == pytest.approx(30.0)


# --------------------------------------------------------------------------- OpenAI

# openai>=3 speaks httpx2, which respx does not patch, so the fake server is a
# MockTransport of whichever HTTP library this SDK version is built on.
sdk_http = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0])

CATEGORIES = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
]


def moderation_result(scores: dict[str, float]) -> dict:
    values = {c: 0.001 for c in CATEGORIES} | scores
    return {
        "flagged": any(v > 0.5 for v in values.values()),
        "categories": {c: v > 0.5 for c, v in values.items()},
        "category_scores": values,
        "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
    }


class FakeModeration:
    """Speaks POST /v1/moderations. Scores each input by keyword; replays queued errors."""

    def __init__(self):
        self.requests: list[dict] = []
        self.errors: list[int] = []

    def __call__(self, request):
        assert request.method == "POST" and request.url.path == "/v1/moderations"
        assert request.headers["authorization"] == "Bearer sk-test"
        body = json.loads(request.content)
        self.requests.append(body)
        if self.errors:
            status = self.errors.pop(0)
            return sdk_http.Response(
                status,
                headers={"retry-after-ms": "1"},
                json={"error": {"message": "nope", "type": "x", "code": None, "param": None}},
            )
        results = []
        for text in body["input"]:
            if "bad" in text:
                return sdk_http.Response(400, json={"error": {"message": "bad input"}})
            if "hate" in text:
                results.append(moderation_result({"hate": 0.9, "harassment": 0.7}))
            elif "hurt myself" in text:
                results.append(moderation_result({"self-harm": 0.95, "harassment": 0.02}))
            else:
                results.append(moderation_result({"harassment": 0.01}))
        return sdk_http.Response(
            200,
            json={"id": "modr-1", "model": "omni-moderation-2024-09-26", "results": results},
        )


@pytest.fixture
def fake_moderation():
    return FakeModeration()


@pytest.fixture
def moderation(fake_moderation):
    def make(**kwargs):
        client = sdk_http.Client(transport=sdk_http.MockTransport(fake_moderation))
        kwargs.setdefault("max_retries", 0)
        return OpenAIModerationScorer(
            "sk-test", base_url="https://api.openai.test/v1", http_client=client, **kwargs
        )

    return make


def test_openai_scores_max_of_toxicity_categories_in_batches(moderation, fake_moderation):
    scorer = moderation(batch_size=2)
    assert scorer.version.startswith("omni-moderation-latest")
    progress = []
    scores = scorer.score_many(
        ["I hate you people", "I want to hurt myself", "nice weather"],
        on_progress=lambda d, t: progress.append((d, t)),
    )
    assert scores == [pytest.approx(0.9), pytest.approx(0.02), pytest.approx(0.01)]
    assert [r["input"] for r in fake_moderation.requests] == [
        ["I hate you people", "I want to hurt myself"],
        ["nice weather"],
    ]
    assert fake_moderation.requests[0]["model"] == "omni-moderation-latest"
    assert progress == [(2, 3), (3, 3)]
    assert scorer.version.startswith("omni-moderation-2024-09-26")


def test_openai_categories_can_be_chosen(moderation):
    scorer = moderation(categories=("harassment", "self-harm"))
    assert scorer.score_many(["I want to hurt myself"]) == [pytest.approx(0.95)]


def test_openai_server_error_gives_none_per_text(moderation, fake_moderation):
    fake_moderation.errors = [500]
    details = moderation().score_details(["a", "b"])
    assert [d.value for d in details] == [None, None]
    assert all("InternalServerError" in d.error for d in details)


def test_openai_retries_rate_limits_through_the_sdk(moderation, fake_moderation):
    fake_moderation.errors = [429]
    assert moderation(max_retries=1).score_many(["hello"]) == [pytest.approx(0.01)]
    assert len(fake_moderation.requests) == 2


def test_openai_bad_request_costs_only_the_bad_text(moderation, fake_moderation):
    assert moderation().score_many(["fine", "bad one", "hate"]) == [
        pytest.approx(0.01),
        None,
        pytest.approx(0.9),
    ]


def test_openai_rejected_key_fails_loudly(moderation, fake_moderation):
    fake_moderation.errors = [401]
    with pytest.raises(ScorerConfigError):
        moderation().score_many(["x"])


def test_openai_without_any_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ScorerConfigError):
        get_scorer("openai")


def test_score_with_details_wraps_a_plain_scorer():
    class Plain:
        name, version = "plain", "1"

        def score_many(self, texts, *, on_progress=None):
            return [0.5, None]

    details = toxicity.score_with_details(Plain(), ["a", "b"])
    assert [d.value for d in details] == [0.5, None]
    assert details[1].error
