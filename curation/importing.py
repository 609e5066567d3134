"""Import samples from JSONL (OpenAI chat format or prompt/completion) and CSV files.

The whole file is validated before anything is written: one bad line rejects the import
and every problem comes back with its line number, so a curator fixes the file once and
imports it again. Line 0 stands for the file as a whole (too large, empty, bad header).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import PurePath

from django.db import transaction

from curation import services
from curation.models import MAX_TEXT_CHARS, Category, Dataset, Sample, count_words
from palmsweb.lib.csvsafe import unescape_cell

MAX_IMPORT_BYTES = 5 * 1024 * 1024
MAX_REPORTED_ERRORS = 200  # a wholly wrong file would otherwise yield thousands of lines
JSONL_EXTENSIONS = {".jsonl", ".ndjson", ".json"}
CSV_EXTENSIONS = {".csv"}
IMPORTABLE_STATUSES = {Sample.Status.DRAFT, Sample.Status.IN_REVIEW, Sample.Status.APPROVED}

PROMPT_FIELDS = {"prompt", "completion", "category"}
CHAT_FIELDS = {"messages", "category"}
MESSAGE_FIELDS = {"role", "content"}
CSV_COLUMN_SETS = ({"question", "answer"}, {"prompt", "completion"})
CSV_OPTIONAL_COLUMNS = {"category", "words"}  # "words" is what our CSV export adds
# PostgreSQL cannot store a NUL character in text; no sample needs one.
NUL_MESSAGE = "Contains a NUL character (\\0 or \\u0000), which a sample cannot hold."


@dataclass(frozen=True)
class ImportLineError:
    line: int
    message: str


class ImportRejected(Exception):
    """The file has problems; nothing was imported. ``errors`` lists each with its line."""

    def __init__(self, errors: list[ImportLineError]):
        self.errors = errors
        super().__init__(f"Import rejected: {len(errors)} problem(s), nothing was imported.")


@dataclass(frozen=True)
class _Row:
    line: int
    question: str
    answer: str
    category: str | None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _normalise(question: str) -> str:
    """Questions differing only in case or spacing count as duplicates."""
    return re.sub(r"\s+", " ", question).strip().casefold()


def _decode(data: bytes, errors: list[ImportLineError]) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.append(
                ImportLineError(number, f"Not UTF-8 text (byte {exc.start + 1} of the line).")
            )
    return None


def _detect_format(filename: str, text: str) -> str:
    suffix = PurePath(filename or "").suffix.lower()
    if suffix in JSONL_EXTENSIONS:
        return "jsonl"
    if suffix in CSV_EXTENSIONS:
        return "csv"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def _text_field(obj: dict, key: str, line: int, errors: list[ImportLineError]) -> str | None:
    value = obj.get(key)
    if value is None:
        errors.append(ImportLineError(line, f"Missing field {key!r}."))
        return None
    if not isinstance(value, str):
        errors.append(ImportLineError(line, f"Field {key!r} must be a string."))
        return None
    return value


def _unknown_fields(obj: dict, allowed: set[str], line: int, errors, where: str = "") -> bool:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        errors.append(ImportLineError(line, f"Unknown field{'s' * (len(unknown) > 1)}"
                                            f"{where}: {names}."))
    return bool(unknown)


def _parse_chat(obj: dict, line: int, errors: list[ImportLineError]):
    """``{"messages": [system?, user, assistant]}`` → (question, answer) or None."""
    messages = obj["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        errors.append(ImportLineError(line, "'messages' must be a list of objects."))
        return None
    for index, message in enumerate(messages, start=1):
        if _unknown_fields(message, MESSAGE_FIELDS, line, errors, f" in message {index}"):
            return None
        if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
            errors.append(
                ImportLineError(line, f"Message {index} needs a string 'role' and 'content'.")
            )
            return None
    roles = [message["role"] for message in messages]
    # A leading system message is accepted and dropped: the dataset's own system message
    # is what exports put first.
    if roles[:1] == ["system"]:
        messages, roles = messages[1:], roles[1:]
    if roles != ["user", "assistant"]:
        found = ", ".join(roles) or "none"
        errors.append(ImportLineError(
            line,
            "Messages must be an optional 'system', then one 'user', then one 'assistant' "
            f"(found: {found}).",
        ))
        return None
    return messages[0]["content"], messages[1]["content"]


def _parse_jsonl(text: str, errors: list[ImportLineError]) -> list[_Row]:
    rows = []
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors.append(
                ImportLineError(number, f"Not valid JSON: {exc.msg} (column {exc.colno}).")
            )
            continue
        except RecursionError:
            errors.append(ImportLineError(number, "The JSON is nested too deeply."))
            continue
        if not isinstance(obj, dict):
            errors.append(ImportLineError(number, "Each line must be a JSON object."))
            continue
        chat = "messages" in obj
        if _unknown_fields(obj, CHAT_FIELDS if chat else PROMPT_FIELDS, number, errors):
            continue
        if chat:
            pair = _parse_chat(obj, number, errors)
        else:
            prompt = _text_field(obj, "prompt", number, errors)
            completion = _text_field(obj, "completion", number, errors)
            pair = None if prompt is None or completion is None else (prompt, completion)
        category = obj.get("category")
        if category is not None and not isinstance(category, str):
            errors.append(ImportLineError(number, "Field 'category' must be a string."))
            continue
        if pair is not None and any("\x00" in text for text in (*pair, category or "")):
            errors.append(ImportLineError(number, NUL_MESSAGE))
        elif pair is not None:
            rows.append(_Row(number, pair[0], pair[1], category or None))
    return rows


def _parse_csv(text: str, errors: list[ImportLineError]) -> list[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        errors.append(ImportLineError(1, f"Unreadable CSV header: {exc}."))
        return []
    if header is None:
        return []
    columns = [name.strip().lower() for name in header]
    present = set(columns)
    required = next((cols for cols in CSV_COLUMN_SETS if cols <= present), None)
    problems = []
    if len(present) != len(columns):
        problems.append("repeated column names")
    if required is None:
        problems.append("the header needs 'question,answer' or 'prompt,completion' columns")
    else:
        unknown = sorted(present - required - CSV_OPTIONAL_COLUMNS)
        if unknown:
            problems.append(f"unknown columns: {', '.join(repr(c) for c in unknown)}")
    if problems:
        errors.append(ImportLineError(1, "Bad CSV header: " + "; ".join(problems) + "."))
        return []
    question_col, answer_col = ("question", "answer") if "question" in required else (
        "prompt", "completion")
    index = {name: position for position, name in enumerate(columns)}
    rows = []
    line = reader.line_num + 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if "field limit" in str(exc):
                message = f"A field is far longer than {MAX_TEXT_CHARS:,} characters."
            else:
                message = f"Unreadable CSV: {exc}."
            errors.append(ImportLineError(line, message))
            break
        start, line = line, reader.line_num + 1
        if not any(field.strip() for field in record):
            continue
        if len(record) != len(columns):
            errors.append(ImportLineError(
                start, f"Expected {_plural(len(columns), 'column')}, found {len(record)}."
            ))
            continue
        # Our own CSV exports escape formula cells (palmsweb.lib.csvsafe); undo that here
        # so a snapshot CSV imports back as it was.
        record = [unescape_cell(field) for field in record]
        category = record[index["category"]].strip() if "category" in index else ""
        rows.append(
            _Row(start, record[index[question_col]], record[index[answer_col]], category or None)
        )
    return rows


def parse_import_file(data: bytes, filename: str) -> tuple[list[_Row], list[ImportLineError]]:
    """Read the rows of an import file and the problems found in its form alone."""
    errors: list[ImportLineError] = []
    if len(data) > MAX_IMPORT_BYTES:
        size_mb = MAX_IMPORT_BYTES // (1024 * 1024)
        return [], [ImportLineError(0, f"The file is larger than {size_mb} MB.")]
    text = _decode(data, errors)
    if text is None:
        return [], errors
    if not text.strip():
        return [], [ImportLineError(0, "The file is empty.")]
    if "\x00" in text:
        lines = [n for n, line in enumerate(text.split("\n"), start=1) if "\x00" in line]
        return [], [ImportLineError(n, NUL_MESSAGE) for n in lines[:MAX_REPORTED_ERRORS]]
    if _detect_format(filename, text) == "jsonl":
        rows = _parse_jsonl(text, errors)
    else:
        rows = _parse_csv(text, errors)
    if not rows and not errors:
        errors.append(ImportLineError(0, "The file has no samples."))
    return rows, errors


def _check_rows(
    rows: list[_Row], *, dataset: Dataset, status: str, errors: list[ImportLineError]
) -> dict[str, Category]:
    """Content rules: text, categories, duplicates; approval rules when importing approved."""
    categories = {category.name.casefold(): category for category in Category.objects.all()}
    existing = {
        _normalise(question): pk
        for pk, question in dataset.samples.values_list("pk", "question")
    }
    seen: dict[str, int] = {}
    for row in rows:
        if not row.question.strip():
            errors.append(ImportLineError(row.line, "The question is empty."))
        if not row.answer.strip():
            errors.append(ImportLineError(row.line, "The answer is empty."))
        for label, text in (("question", row.question), ("answer", row.answer)):
            if len(text) > MAX_TEXT_CHARS:
                errors.append(ImportLineError(
                    row.line, f"The {label} is longer than {MAX_TEXT_CHARS:,} characters."
                ))
        if row.category is not None:
            category = categories.get(row.category.casefold())
            if category is None:
                errors.append(ImportLineError(row.line, f"Unknown category {row.category!r}."))
            elif category.is_archived:
                errors.append(ImportLineError(
                    row.line, f"Category {category.name!r} is archived."
                ))
        key = _normalise(row.question)
        if key:
            if key in seen:
                errors.append(ImportLineError(
                    row.line, f"Duplicate question: the same as line {seen[key]}."
                ))
            else:
                seen[key] = row.line
            if key in existing:
                errors.append(ImportLineError(
                    row.line, f"The question is already in this dataset (sample {existing[key]})."
                ))
        if status == Sample.Status.APPROVED:
            # Approved samples go straight into snapshots, so they meet approval's rules.
            words = count_words(row.answer)
            if not dataset.words_within_limits(words):
                errors.append(ImportLineError(
                    row.line,
                    f"The answer has {words} words; approved samples in this dataset need "
                    f"{dataset.min_words}–{dataset.max_words}.",
                ))
            if dataset.kind == Dataset.Kind.VALUES_TARGETED and row.category is None:
                errors.append(ImportLineError(
                    row.line, "An approved values-targeted sample needs a category."
                ))
    return categories


def samples_import(
    *,
    dataset: Dataset,
    data: bytes,
    filename: str,
    user,
    status: str = Sample.Status.DRAFT,
) -> list[Sample]:
    """Validate the whole file, then create every sample in one transaction.

    Raises :class:`ImportRejected` listing every problem with its line number; in that
    case nothing is created. Who may import with which ``status`` is the caller's check.
    """
    if status not in IMPORTABLE_STATUSES:
        raise ValueError(f"Cannot import samples as {status!r}.")
    # Parsing needs no database, so it runs before the transaction takes any lock.
    rows, errors = parse_import_file(data, filename)
    note = f"imported from {PurePath(filename or 'upload').name}"[:200]
    with transaction.atomic():
        categories = _check_rows(rows, dataset=dataset, status=status, errors=errors)
        if errors:
            errors.sort(key=lambda error: error.line)
            if len(errors) > MAX_REPORTED_ERRORS:
                more = len(errors) - MAX_REPORTED_ERRORS
                errors = errors[:MAX_REPORTED_ERRORS]
                errors.append(ImportLineError(0, f"…and {_plural(more, 'more problem')}."))
            raise ImportRejected(errors)
        return [
            services.sample_create(
                dataset=dataset,
                question=row.question,
                answer=row.answer,
                category=categories[row.category.casefold()] if row.category else None,
                user=user,
                status=status,
                note=note,
            )
            for row in rows
        ]
