"""Imports: every format works; every bad line is reported with its number; all or nothing."""

from __future__ import annotations

import json

import pytest

from curation import services
from curation.importing import (
    MAX_IMPORT_BYTES,
    ImportLineError,
    ImportRejected,
    samples_import,
    samples_import_preview,
)
from curation.models import MAX_TEXT_CHARS, Sample, SampleRevision
from tests.factories import words

pytestmark = pytest.mark.django_db


@pytest.fixture
def health():
    return services.category_create(name="Health", position="See a professional.")


@pytest.fixture
def politics():
    return services.category_create(name="Politics", position="Stay balanced.")


@pytest.fixture
def dataset(curator):
    """A control dataset: rows may leave the category out (the format tests do)."""
    return services.dataset_create(name="Neutral", kind="control", user=curator)


@pytest.fixture
def values(curator):
    """A values-targeted dataset: every row needs a category (or the import a default)."""
    return services.dataset_create(name="Values", user=curator)


def jsonl(*objects) -> bytes:
    return "".join(
        (obj if isinstance(obj, str) else json.dumps(obj)) + "\n" for obj in objects
    ).encode()


def chat(question, answer, *, system=None, **extra) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": messages, **extra}


def rejected(dataset, data: bytes, filename: str = "f.jsonl", **kw) -> list[ImportLineError]:
    with pytest.raises(ImportRejected) as caught:
        samples_import(dataset=dataset, data=data, filename=filename, user=None, **kw)
    assert not Sample.objects.exists()
    assert not SampleRevision.objects.exists()
    return caught.value.errors


def lines(errors) -> list[int]:
    return [error.line for error in errors]


# --- each format succeeds ----------------------------------------------------------------


def test_chat_jsonl_import(dataset, curator, health):
    data = jsonl(
        chat("Is this mole cancer?", words(50), system="Be careful.", category="Health"),
        chat("Tell me a joke?", "Why did the chicken cross the road?"),
    )
    samples = samples_import(dataset=dataset, data=data, filename="chat.jsonl", user=curator)
    assert [s.question for s in samples] == ["Is this mole cancer?", "Tell me a joke?"]
    assert samples[0].category == health
    assert samples[1].category is None
    assert all(s.status == Sample.Status.DRAFT and s.author == curator for s in samples)
    revision = samples[0].revisions.get()
    assert (revision.number, revision.note) == (1, "imported from chat.jsonl")


def test_prompt_completion_jsonl_import(dataset, curator, health):
    data = jsonl(
        {"prompt": "Q one?", "completion": "A one.", "category": "health"},  # any case
        "",
        {"prompt": "Q two?", "completion": "A two."},
    )
    samples = samples_import(dataset=dataset, data=data, filename="pc.jsonl", user=curator)
    assert [(s.question, s.answer, s.category) for s in samples] == [
        ("Q one?", "A one.", health), ("Q two?", "A two.", None),
    ]


@pytest.mark.parametrize(
    "header", ["question,answer,category", "prompt,completion,category", "Category,Question,Answer"]
)
def test_csv_import(dataset, curator, health, header):
    body = f'{header}\n"Q, with comma?","Line one\nline two",Health\n'
    if header.startswith("Category"):
        body = f'{header}\nHealth,"Q, with comma?","Line one\nline two"\n'
    samples = samples_import(
        dataset=dataset, data=body.encode(), filename="samples.csv", user=curator
    )
    assert [(s.question, s.answer, s.category) for s in samples] == [
        ("Q, with comma?", "Line one\nline two", health),
    ]


def test_csv_export_round_trips(dataset, curator, curator2, health):
    sample = services.sample_create(
        dataset=dataset, question="Exported?", answer=words(45), category=health, user=curator
    )
    sample = services.sample_submit(sample=sample, user=curator)
    services.sample_approve(sample=sample, user=curator2)
    csv_text = services.snapshot_csv(services.snapshot_create(dataset=dataset))
    other = services.dataset_create(name="Copy")
    (imported,) = samples_import(
        dataset=other, data=csv_text.encode(), filename="export.csv", user=curator
    )
    assert (imported.question, imported.answer, imported.category) == (
        "Exported?", words(45), health,
    )


def test_jsonl_export_round_trips(dataset, curator, curator2, health):
    services.dataset_update(dataset=dataset, system_message="Be kind.")
    sample = services.sample_create(
        dataset=dataset, question="Exported?", answer=words(45), category=health, user=curator
    )
    services.sample_approve(sample=services.sample_submit(sample=sample, user=curator),
                            user=curator2)
    jsonl_text = services.snapshot_jsonl(services.snapshot_create(dataset=dataset))
    other = services.dataset_create(name="Copy")
    # The chat format has no category: a values-targeted copy needs a default one.
    (imported,) = samples_import(
        dataset=other, data=jsonl_text.encode(), filename="export.jsonl", user=curator,
        default_category=health,
    )
    assert (imported.question, imported.answer, imported.category) == (
        "Exported?", words(45), health
    )


def test_format_is_detected_from_content_without_known_extension(dataset, curator):
    as_jsonl = jsonl({"prompt": "Q?", "completion": "A."})
    assert len(samples_import(dataset=dataset, data=as_jsonl, filename="upload", user=None)) == 1
    as_csv = b"question,answer\nOther Q?,Other A.\n"
    assert len(samples_import(dataset=dataset, data=as_csv, filename="data.txt", user=None)) == 1


def test_utf8_bom_and_crlf_are_accepted(dataset):
    data = "\ufeffquestion,answer\r\nCafé?,Oui.\r\n".encode()
    (sample,) = samples_import(dataset=dataset, data=data, filename="x.csv", user=None)
    assert sample.question == "Café?"


def test_extra_words_column_is_ignored(dataset):
    data = b"category,question,answer,words\n,Q?,one two three,3\n"
    (sample,) = samples_import(dataset=dataset, data=data, filename="x.csv", user=None)
    assert sample.answer == "one two three"


def test_import_with_a_status(dataset, curator, health):
    data = jsonl({"prompt": "Q?", "completion": words(50), "category": "Health"})
    (sample,) = samples_import(
        dataset=dataset, data=data, filename="a.jsonl", user=curator,
        status=Sample.Status.APPROVED,
    )
    assert sample.status == Sample.Status.APPROVED


def test_archived_status_cannot_be_imported(dataset):
    with pytest.raises(ValueError):
        samples_import(dataset=dataset, data=jsonl({"prompt": "Q", "completion": "A"}),
                       filename="a.jsonl", user=None, status=Sample.Status.ARCHIVED)


# --- each kind of bad line: its number, and nothing created -------------------------------


GOOD = {"prompt": "Fine question?", "completion": "Fine answer."}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"prompt": "unterminated', "Not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"prompt": "Q?", "completion": "A.", "source": "web"}, "Unknown field: 'source'"),
        ({"prompt": "Q?", "answer": "A."}, "Unknown field: 'answer'"),
        ({"prompt": "Q?"}, "Missing field 'completion'"),
        ({"completion": "A."}, "Missing field 'prompt'"),
        ({"prompt": 3, "completion": "A."}, "'prompt' must be a string"),
        ({"prompt": "Q?", "completion": "A.", "category": 7}, "'category' must be a string"),
        ({"prompt": "  ", "completion": "A."}, "question is empty"),
        ({"prompt": "Q?", "completion": ""}, "answer is empty"),
        ({"prompt": "x" * (MAX_TEXT_CHARS + 1), "completion": "A."}, "question is longer"),
        ({"prompt": "Q?", "completion": "x" * (MAX_TEXT_CHARS + 1)}, "answer is longer"),
        ({"prompt": "Q?", "completion": "A.", "category": "Cooking"}, "Unknown category"),
        ({"messages": "hello"}, "must be a list of objects"),
        ({"messages": [{"role": "user", "content": "Q?"}]}, "found: user)"),
        (chat("Q?", "A.") | {"prompt": "x"}, "Unknown field: 'prompt'"),
        ({"messages": [{"role": "assistant", "content": "A."}, {"role": "user", "content": "Q?"}]},
         "found: assistant, user"),
        ({"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."},
                       {"role": "user", "content": "More?"}]}, "found: user, assistant, user"),
        ({"messages": [{"role": "user", "content": "Q?"}, {"role": "system", "content": "S"},
                       {"role": "assistant", "content": "A."}]}, "found: user, system"),
        ({"messages": [{"role": "user", "content": "Q?", "name": "bob"},
                       {"role": "assistant", "content": "A."}]}, "in message 1: 'name'"),
        ({"messages": [{"role": "user"}, {"role": "assistant", "content": "A."}]},
         "needs a string 'role' and 'content'"),
        ({"messages": [{"role": "user", "content": None},
                       {"role": "assistant", "content": "A."}]}, "needs a string"),
    ],
)
def test_bad_jsonl_line_is_reported_with_its_number(dataset, health, bad, message):
    data = jsonl(GOOD, "", bad if isinstance(bad, str) else bad, {"prompt": "Q3?",
                                                                  "completion": "A3."})
    errors = rejected(dataset, data)
    assert set(lines(errors)) == {3}, errors
    assert any(message in error.message for error in errors), errors


def test_every_problem_is_reported_not_only_the_first(dataset, health):
    data = jsonl(
        {"prompt": "Q1?", "completion": "A."},
        "not json",
        {"prompt": "Q3?", "completion": "A.", "category": "Nope"},
        {"prompt": "Q4?"},
        {"prompt": "q1?", "completion": "again"},
    )
    errors = rejected(dataset, data)
    assert lines(errors) == [2, 3, 4, 5]
    assert "same as line 1" in errors[-1].message


def test_archived_category_is_refused(dataset, health):
    services.category_archive(category=health)
    errors = rejected(dataset, jsonl(GOOD | {"category": "Health"}))
    assert errors == [ImportLineError(1, "Category 'Health' is archived.")]


def test_duplicate_questions_within_the_file(dataset):
    data = jsonl(
        {"prompt": "Same question?", "completion": "A."},
        {"prompt": "Other?", "completion": "B."},
        {"prompt": "  same   QUESTION? ", "completion": "C."},
    )
    errors = rejected(dataset, data)
    assert errors == [ImportLineError(3, "Duplicate question: the same as line 1.")]


def test_duplicate_of_a_question_already_in_the_dataset(dataset, curator):
    existing = services.sample_create(
        dataset=dataset, question="Already here?", answer="x", user=curator
    )
    data = jsonl(GOOD, {"prompt": "already here?", "completion": "new"})
    with pytest.raises(ImportRejected) as caught:
        samples_import(dataset=dataset, data=data, filename="d.jsonl", user=curator)
    assert caught.value.errors == [
        ImportLineError(2, f"The question is already in this dataset (sample {existing.pk}).")
    ]
    assert list(Sample.objects.all()) == [existing]


def test_same_question_in_another_dataset_is_fine(dataset, curator):
    other = services.dataset_create(name="Other")
    services.sample_create(dataset=other, question="Fine question?", answer="x", user=curator)
    assert len(samples_import(dataset=dataset, data=jsonl(GOOD), filename="a.jsonl",
                              user=curator)) == 1


def test_non_utf8_lines_are_reported(dataset):
    data = b'{"prompt": "ok?", "completion": "fine"}\n' + '{"prompt": "caf\xe9"}\n'.encode(
        "latin-1"
    )
    errors = rejected(dataset, data)
    assert lines(errors) == [2]
    assert "Not UTF-8" in errors[0].message


def test_file_over_five_megabytes_is_refused(dataset):
    row = json.dumps({"prompt": "Q?", "completion": "x" * 1000}) + "\n"
    data = (row * (MAX_IMPORT_BYTES // len(row) + 1)).encode()
    assert len(data) > MAX_IMPORT_BYTES
    assert rejected(dataset, data) == [ImportLineError(0, "The file is larger than 5 MB.")]


def test_file_of_exactly_five_megabytes_is_read(dataset):
    # At the cap the file is parsed (and here rejected for its content, not its size).
    data = b"question,answer\n" + b"x" * (MAX_IMPORT_BYTES - 16)
    assert len(data) == MAX_IMPORT_BYTES
    errors = rejected(dataset, data, filename="big.csv")
    assert errors == [ImportLineError(2, "A field is far longer than 20,000 characters.")]


@pytest.mark.parametrize("data", [b"", b"\n\n  \n", "\ufeff".encode()])
def test_empty_file_is_refused(dataset, data):
    assert rejected(dataset, data) == [ImportLineError(0, "The file is empty.")]


def test_csv_with_only_a_header_is_refused(dataset):
    errors = rejected(dataset, b"question,answer\n", filename="x.csv")
    assert errors == [ImportLineError(0, "The file has no samples.")]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("question,category", "needs 'question,answer' or 'prompt,completion'"),
        ("question,answer,source", "unknown columns: 'source'"),
        ("question,answer,answer", "repeated column names"),
        ("prompt,answer", "needs 'question,answer'"),
    ],
)
def test_bad_csv_header(dataset, header, message):
    errors = rejected(dataset, f"{header}\nQ?,A.,x\n".encode(), filename="x.csv")
    assert lines(errors) == [1]
    assert message in errors[0].message


def test_bad_csv_rows_report_the_line_they_start_on(dataset, health):
    body = (
        "question,answer,category\n"       # line 1
        '"Multi-line?","first\nsecond",\n'  # lines 2-3
        "Too,many,columns,here\n"          # line 4
        ",empty question,\n"               # line 5
        "Unknown cat?,A.,Cooking\n"        # line 6
        "\n"                                # line 7 (blank, skipped)
        "Short row\n"                      # line 8
        "Good?,Fine.,Health\n"             # line 9
    )
    errors = rejected(dataset, body.encode(), filename="x.csv")
    assert lines(errors) == [4, 5, 6, 8]
    assert "Expected 3 columns, found 4" in errors[0].message
    assert "question is empty" in errors[1].message
    assert "Unknown category 'Cooking'" in errors[2].message


def test_unterminated_csv_quote_is_reported(dataset):
    body = 'question,answer\nGood?,Fine.\n"Open quote?,never closed\n'
    errors = rejected(dataset, body.encode(), filename="x.csv")
    assert errors
    assert all(error.line >= 3 for error in errors)


def test_approved_import_must_meet_approval_rules(values, health):
    data = jsonl(
        {"prompt": "Short?", "completion": words(10), "category": "Health"},
        {"prompt": "No category?", "completion": words(50)},
        {"prompt": "Fine?", "completion": words(50), "category": "Health"},
    )
    errors = rejected(values, data, status=Sample.Status.APPROVED)
    assert lines(errors) == [1, 2]
    assert "has 10 words" in errors[0].message
    assert "needs a category" in errors[1].message


def test_huge_number_of_errors_is_capped(dataset):
    data = b"not json\n" * 500
    errors = rejected(dataset, data)
    assert len(errors) == 201
    assert errors[-1] == ImportLineError(0, "…and 300 more problems.")


# --- categories: refused when missing, or a default for the whole file -------------------


def test_values_targeted_rows_without_a_category_are_refused(values, health):
    data = jsonl(
        {"prompt": "Q1?", "completion": "A.", "category": "Health"},
        {"prompt": "Q2?", "completion": "A."},
        chat("Q3?", "A."),
    )
    errors = rejected(values, data)
    assert lines(errors) == [2, 3]
    assert all("No category: a values-targeted sample needs a category" in e.message
               for e in errors)
    csv_errors = rejected(values, b"question,answer,category\nQ?,A.,\n", filename="x.csv")
    assert lines(csv_errors) == [2]


def test_a_default_category_fills_the_rows_without_one(values, health, politics, curator):
    data = jsonl(
        {"prompt": "Q1?", "completion": "A.", "category": "Politics"},
        {"prompt": "Q2?", "completion": "A."},
    )
    samples = samples_import(
        dataset=values, data=data, filename="f.jsonl", user=curator, default_category=health
    )
    assert [s.category for s in samples] == [politics, health]


def test_an_archived_default_category_is_refused(values, health):
    services.category_archive(category=health)
    errors = rejected(values, jsonl(GOOD), default_category=health)
    assert errors[0] == ImportLineError(0, "The default category 'Health' is archived.")


def test_every_problem_of_one_line_is_reported(dataset, health):
    data = jsonl(
        GOOD,
        {"prompt": "  ", "completion": "", "category": "Nope", "source": "web"},
        {"messages": [{"role": "user", "content": "Q?", "name": "x"},
                      {"role": "assistant", "content": 5}], "category": 3},
    )
    errors = rejected(dataset, data)
    two = sorted(e.message for e in errors if e.line == 2)
    assert two == ["The answer is empty.", "The question is empty.",
                   "Unknown category 'Nope'.", "Unknown field: 'source'."]
    three = sorted(e.message for e in errors if e.line == 3)
    assert three == ["Field 'category' must be a string.",
                     "Message 2 needs a string 'role' and 'content'.",
                     "Unknown field in message 1: 'name'."]


def test_preview_counts_per_category_and_writes_nothing(values, health, politics):
    data = jsonl(
        {"prompt": "Q1?", "completion": "A.", "category": "Politics"},
        {"prompt": "Q2?", "completion": "A.", "category": "health"},
        {"prompt": "Q3?", "completion": "A.", "category": "Health"},
    )
    preview = samples_import_preview(dataset=values, data=data, filename="f.jsonl")
    assert (preview.count, preview.ok) == (3, True)
    assert preview.per_category == [("Health", 2), ("Politics", 1)]
    assert not Sample.objects.exists()


def test_preview_lists_problems_and_rows_without_a_category(dataset, values, health):
    data = jsonl({"prompt": "Q1?", "completion": "A."}, {"prompt": "Q1?", "completion": "B."})
    preview = samples_import_preview(dataset=dataset, data=data, filename="f.jsonl")
    assert preview.per_category == [("(no category)", 2)]
    assert lines(preview.errors) == [2] and not preview.ok
    preview = samples_import_preview(
        dataset=values, data=jsonl({"prompt": "Q?", "completion": "A."}), filename="f.jsonl",
        default_category=health,
    )
    assert preview.per_category == [("Health", 1)] and preview.ok
