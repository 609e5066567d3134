"""Import samples from JSONL (OpenAI chat format or prompt/completion) and CSV files.

The whole file is validated before anything is written: one bad line rejects the import
and every problem of every line comes back with its line number, so a curator fixes the
file once and imports it again. Line 0 stands for the file as a whole (too large, empty,
bad header). A preview (:func:`samples_import_preview`) says what would be imported — rows,
per category, problems — without writing; the import page shows it before the curator
confirms (:class:`PendingImport` keeps the upload in between).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import PurePath

from django.db import transaction
from django.utils import timezone

from curation import services
from curation.models import (
    MAX_TEXT_CHARS,
    Category,
    Dataset,
    PendingImport,
    Sample,
    count_words,
)
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
    question: str | None  # None: the line's question could not be read (already reported)
    answer: str | None
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
    """``{"messages": [system?, user, assistant]}`` → (question, answer), either of which is
    None when it cannot be read. Every problem of every message is reported."""
    messages = obj["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        errors.append(ImportLineError(line, "'messages' must be a list of objects."))
        return None, None
    readable = True
    for index, message in enumerate(messages, start=1):
        _unknown_fields(message, MESSAGE_FIELDS, line, errors, f" in message {index}")
        if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
            errors.append(
                ImportLineError(line, f"Message {index} needs a string 'role' and 'content'.")
            )
            readable = False
    if not readable:
        return None, None
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
        return None, None
    return messages[0]["content"], messages[1]["content"]


def _parse_jsonl_object(obj: dict, number: int, errors: list[ImportLineError]) -> _Row:
    """One JSONL object → a row; every problem of the line is reported, not only the
    first. Parts that cannot be read are None (the content checks skip them)."""
    chat = "messages" in obj
    _unknown_fields(obj, CHAT_FIELDS if chat else PROMPT_FIELDS, number, errors)
    if chat:
        question, answer = _parse_chat(obj, number, errors)
    else:
        question = _text_field(obj, "prompt", number, errors)
        answer = _text_field(obj, "completion", number, errors)
    category = obj.get("category")
    if category is not None and not isinstance(category, str):
        errors.append(ImportLineError(number, "Field 'category' must be a string."))
        category = None
    # A JSON "\u0000" escape decodes to NUL, which the raw-text check cannot see.
    if any("\x00" in text for text in (question or "", answer or "", category or "")):
        errors.append(ImportLineError(number, NUL_MESSAGE))
        question = answer = category = None
    return _Row(number, question, answer, category or None)


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
        rows.append(_parse_jsonl_object(obj, number, errors))
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


NO_CATEGORY = "(no category)"


@dataclass
class _Check:
    """What the content checks need as they go through the rows."""

    dataset: Dataset
    status: str
    default_category: Category | None
    errors: list[ImportLineError]
    categories: dict[str, Category]
    existing: dict[str, int]  # normalised question → sample id already in the dataset
    seen: dict[str, int] = field(default_factory=dict)  # normalised question → line

    def category_of(self, row: _Row) -> Category | None:
        if row.category is None:
            return self.default_category
        return self.categories.get(row.category.casefold())

    def add(self, row: _Row, message: str) -> None:
        self.errors.append(ImportLineError(row.line, message))


def _check_text(check: _Check, row: _Row) -> None:
    for label, text in (("question", row.question), ("answer", row.answer)):
        if text is None:
            continue  # unreadable: reported when parsed
        if not text.strip():
            check.add(row, f"The {label} is empty.")
        if len(text) > MAX_TEXT_CHARS:
            check.add(row, f"The {label} is longer than {MAX_TEXT_CHARS:,} characters.")


def _check_category(check: _Check, row: _Row) -> None:
    if row.category is None:
        if check.default_category is None and check.dataset.kind == Dataset.Kind.VALUES_TARGETED:
            # Coverage and approval count values-targeted samples per category.
            check.add(row, "No category: a values-targeted sample needs a category. Add a "
                           "'category' field (or column), or choose a default category.")
        return
    category = check.categories.get(row.category.casefold())
    if category is None:
        check.add(row, f"Unknown category {row.category!r}.")
    elif category.is_archived:
        check.add(row, f"Category {category.name!r} is archived.")


def _check_duplicate(check: _Check, row: _Row) -> None:
    key = _normalise(row.question or "")
    if not key:
        return
    if key in check.seen:
        check.add(row, f"Duplicate question: the same as line {check.seen[key]}.")
    else:
        check.seen[key] = row.line
    if key in check.existing:
        check.add(row, f"The question is already in this dataset (sample {check.existing[key]}).")


def _check_approval(check: _Check, row: _Row) -> None:
    """Approved samples go straight into snapshots, so they meet approval's rules."""
    dataset = check.dataset
    if row.answer is None:
        return
    words = count_words(row.answer)
    if not dataset.words_within_limits(words):
        check.add(row, f"The answer has {words} words; approved samples in this dataset need "
                       f"{dataset.min_words}–{dataset.max_words}.")


def _check_rows(
    rows: list[_Row],
    *,
    dataset: Dataset,
    status: str,
    errors: list[ImportLineError],
    default_category: Category | None = None,
) -> _Check:
    """Content rules: text, categories, duplicates; approval rules when importing approved.
    Every rule runs on every row, so a line reports all its problems at once."""
    check = _Check(
        dataset=dataset,
        status=status,
        default_category=default_category,
        errors=errors,
        categories={
            category.name.casefold(): category
            for category in Category.objects.filter(profile_id=dataset.profile_id)
        },
        existing={
            _normalise(question): pk
            for pk, question in dataset.samples.values_list("pk", "question")
        },
    )
    if default_category is not None and default_category.profile_id != dataset.profile_id:
        errors.append(ImportLineError(
            0, f"The default category {default_category.name!r} belongs to another profile."
        ))
    if default_category is not None and default_category.is_archived:
        errors.append(ImportLineError(
            0, f"The default category {default_category.name!r} is archived."
        ))
    for row in rows:
        _check_text(check, row)
        _check_category(check, row)
        _check_duplicate(check, row)
        if status == Sample.Status.APPROVED:
            _check_approval(check, row)
    return check


def _capped(errors: list[ImportLineError]) -> list[ImportLineError]:
    errors = sorted(errors, key=lambda error: error.line)
    if len(errors) > MAX_REPORTED_ERRORS:
        more = len(errors) - MAX_REPORTED_ERRORS
        errors = errors[:MAX_REPORTED_ERRORS]
        errors.append(ImportLineError(0, f"…and {_plural(more, 'more problem')}."))
    return errors


@dataclass(frozen=True)
class ImportPreview:
    """What an import would do: how many samples, per category, and every problem."""

    count: int
    per_category: list[tuple[str, int]]  # category order, then NO_CATEGORY
    errors: list[ImportLineError]

    @property
    def ok(self) -> bool:
        return not self.errors


def _per_category(check: _Check, rows: list[_Row]) -> list[tuple[str, int]]:
    """Rows per category in category order, then names no category has (as written in the
    file), then rows without any."""
    counts: dict[Category | None, int] = {}
    unknown: dict[str, int] = {}
    for row in rows:
        category = check.category_of(row)
        if category is None and row.category is not None:
            unknown[row.category] = unknown.get(row.category, 0) + 1
        else:
            counts[category] = counts.get(category, 0) + 1
    named = sorted((c for c in counts if c is not None), key=lambda c: (c.order, c.name))
    result = [(category.name, counts[category]) for category in named]
    result += [(f"{name} (unknown)", n) for name, n in sorted(unknown.items())]
    if None in counts:
        result.append((NO_CATEGORY, counts[None]))
    return result


def _parse(data: bytes, filename: str, status: str):
    if status not in IMPORTABLE_STATUSES:
        raise ValueError(f"Cannot import samples as {status!r}.")
    return parse_import_file(data, filename)


def samples_import_preview(
    *,
    dataset: Dataset,
    data: bytes,
    filename: str,
    status: str = Sample.Status.DRAFT,
    default_category: Category | None = None,
) -> ImportPreview:
    """Check the whole file as :func:`samples_import` would and say what it would import,
    writing nothing (the import page's preview; the API's ``dry_run``)."""
    rows, errors = _parse(data, filename, status)
    check = _check_rows(
        rows, dataset=dataset, status=status, errors=errors, default_category=default_category
    )
    return ImportPreview(
        count=len(rows), per_category=_per_category(check, rows), errors=_capped(check.errors)
    )


def samples_import(
    *,
    dataset: Dataset,
    data: bytes,
    filename: str,
    user,
    status: str = Sample.Status.DRAFT,
    default_category: Category | None = None,
) -> list[Sample]:
    """Validate the whole file, then create every sample in one transaction.

    Rows without a category get ``default_category``; without one, a values-targeted
    dataset refuses them. Raises :class:`ImportRejected` listing every problem with its
    line number; in that case nothing is created. Who may import with which ``status`` is
    the caller's check.
    """
    # Parsing needs no database, so it runs before the transaction takes any lock.
    rows, errors = _parse(data, filename, status)
    note = f"imported from {PurePath(filename or 'upload').name}"[:200]
    with transaction.atomic():
        check = _check_rows(
            rows, dataset=dataset, status=status, errors=errors, default_category=default_category
        )
        if check.errors:
            raise ImportRejected(_capped(check.errors))
        return [
            services.sample_create(
                dataset=dataset,
                question=row.question,
                answer=row.answer,
                category=check.category_of(row),
                user=user,
                status=status,
                note=note,
            )
            for row in rows
        ]


# --- the page's two steps: upload and preview, then confirm --------------------------------

PENDING_IMPORT_LIFETIME = timedelta(days=1)


@transaction.atomic
def pending_import_create(
    *,
    dataset: Dataset,
    data: bytes,
    filename: str,
    user,
    status: str = Sample.Status.DRAFT,
    default_category: Category | None = None,
) -> PendingImport:
    """Keep an uploaded file (that passed its preview) until its uploader confirms it;
    uploads older than a day are dropped on the way."""
    if status not in IMPORTABLE_STATUSES:
        raise ValueError(f"Cannot import samples as {status!r}.")
    PendingImport.objects.filter(
        created_at__lt=timezone.now() - PENDING_IMPORT_LIFETIME
    ).delete()
    return PendingImport.objects.create(
        dataset=dataset,
        created_by=user,
        filename=PurePath(filename or "upload").name[:255],
        data=data,
        status=status,
        default_category=default_category,
    )


def pending_import_preview(pending: PendingImport) -> ImportPreview:
    return samples_import_preview(
        dataset=pending.dataset,
        data=bytes(pending.data),
        filename=pending.filename,
        status=pending.status,
        default_category=pending.default_category,
    )


@transaction.atomic
def pending_import_confirm(*, pending: PendingImport, user) -> list[Sample]:
    """Import the previewed file, checked again against the dataset as it is now (it may
    have changed since the preview), and drop the pending upload. On
    :class:`ImportRejected` nothing changes."""
    samples = samples_import(
        dataset=pending.dataset,
        data=bytes(pending.data),
        filename=pending.filename,
        user=user,
        status=pending.status,
        default_category=pending.default_category,
    )
    pending.delete()
    return samples
