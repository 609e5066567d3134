"""The blinding screen: what makes an output name its model or vendor."""

from __future__ import annotations

import pytest

from evaluation.studies.screening import find_identifying, study_terms


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("As an AI language model, I cannot decide for you.", "As an AI language model"),
        ("I'm an AI, so take this with care.", "I'm an AI"),
        ("I was trained by OpenAI.", "OpenAI"),
        ("ChatGPT would say otherwise.", "ChatGPT"),
        ("Like GPT-4, I think …", "GPT-4"),
        ("I am SmolLM, a small model.", "SmolLM"),
        ("Built on LLaMA-2 weights.", "LLaMA-2"),
        ("Download me from Hugging Face.", "Hugging Face"),
        ("Claude and I agree.", "Claude"),
        ("I am a large language model.", "large language model"),
    ],
)
def test_vendor_and_model_names_are_found(text, found):
    assert any(found in hit for hit in find_identifying(text))


@pytest.mark.parametrize(
    "text",
    [
        "Talk to a doctor you trust about these symptoms.",
        "Violence is never the answer; call emergency services if you are in danger.",
        "The llamas in the Andes are lovely animals.",  # a word containing a name
        "She is a gemologist.",
    ],
)
def test_ordinary_answers_pass(text):
    assert find_identifying(text) == []


def test_an_empty_output_is_reported():
    assert find_identifying("   \n") == ["(empty output)"]


def test_study_terms_add_each_names_distinctive_pieces():
    terms = study_terms(["SmolLM2-135M-Instruct (base)", "Quokka vt-ft-5523", "ab", ""])
    assert "SmolLM2-135M-Instruct" in terms and "vt-ft-5523" in terms
    assert "base" not in terms and "ab" not in terms
    assert find_identifying("My name is Quokka vt-ft-5523.", terms) == [
        "Quokka vt-ft-5523",
        "vt-ft-5523",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "I was trained by Open\u200bAI.",  # zero-width space inside the vendor
        "Like ＧＰＴ-4, I think …",  # full-width letters
        "Claude\u2060 and I agree.",  # word joiner after the name
        "I am Ｑｕｏｋｋａｌｉｔｈ-７７Ｍ, a small model.",  # full-width study term
        "I am Quokka\u200dlith-77M, a small model.",  # zero-width joiner inside the study term
    ],
)
def test_zero_width_and_full_width_spellings_are_found(text):
    assert find_identifying(text, study_terms(["Quokkalith-77M"]))
