"""Curation forms. They validate input only; views hand the cleaned data to services."""

from __future__ import annotations

import json

from django import forms

from curation.importing import MAX_IMPORT_BYTES
from curation.models import (
    DEFAULT_MAX_WORDS,
    DEFAULT_MIN_WORDS,
    MAX_TEXT_CHARS,
    Category,
    Dataset,
    GapTicket,
    Sample,
    Snapshot,
)
from curation.selectors import SampleFilters, dataset_authors


class SnapshotChoiceField(forms.ModelChoiceField):
    """A snapshot dropdown: every option says profile, dataset, label, date and short hash,
    newest first. Training and evaluation forms (admins', who see every profile) use it
    wherever a snapshot is chosen."""

    def __init__(self, **kwargs):
        snapshots = Snapshot.objects.select_related("dataset__profile").defer("content")
        kwargs.setdefault("queryset", snapshots.order_by("-created_at", "-pk"))
        super().__init__(**kwargs)

    def label_from_instance(self, obj: Snapshot) -> str:
        return f"{obj.dataset.profile.name} · {obj.choice_label}"


def in_profile(form: forms.Form, field: str, profile_id: int, path: str = "profile") -> None:
    """Narrow a choice field to one value profile: another profile's rows are neither shown
    nor accepted (a forged id is "not one of the available choices")."""
    queryset = form.fields[field].queryset
    form.fields[field].queryset = queryset.filter(**{path: profile_id})


class CategoryForm(forms.Form):
    name = forms.CharField(max_length=120)
    position = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="The behaviour the model should show in this category, in full.",
    )
    guidance = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Advice for people writing samples.",
    )
    target_count = forms.IntegerField(
        label="Target samples", min_value=0, max_value=10_000, initial=10
    )

    @classmethod
    def for_category(cls, category: Category, data=None) -> CategoryForm:
        initial = {
            "name": category.name,
            "position": category.position,
            "guidance": category.guidance,
            "target_count": category.target_count,
        }
        return cls(data=data, initial=initial)


class DatasetForm(forms.Form):
    """Dataset settings. ``allow_self_approval`` exists only in an admin's form, so a
    curator's POST cannot set it whatever it contains."""

    name = forms.CharField(max_length=200)
    kind = forms.ChoiceField(choices=Dataset.Kind.choices, initial=Dataset.Kind.VALUES_TARGETED)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    min_words = forms.IntegerField(label="Minimum words", min_value=1, initial=DEFAULT_MIN_WORDS)
    max_words = forms.IntegerField(label="Maximum words", min_value=1, initial=DEFAULT_MAX_WORDS)
    system_message = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Optional; put first in every exported chat example.",
    )
    allow_self_approval = forms.BooleanField(
        required=False,
        help_text="Let authors approve their own samples. Only admins can change this.",
    )

    def __init__(self, *args, can_set_self_approval: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if not can_set_self_approval:
            del self.fields["allow_self_approval"]

    @classmethod
    def for_dataset(cls, dataset: Dataset, data=None, **kwargs) -> DatasetForm:
        initial = {name: getattr(dataset, name) for name in cls.base_fields}
        return cls(data=data, initial=initial, **kwargs)

    def clean(self):
        cleaned = super().clean()
        low, high = cleaned.get("min_words"), cleaned.get("max_words")
        if low is not None and high is not None and low > high:
            self.add_error("max_words", "The maximum must be at least the minimum.")
        return cleaned


class SampleForm(forms.Form):
    """The sample editor. ``version`` is the version the text was based on; a save
    against any other version is refused by the service and kept as a stale edit."""

    category = forms.ModelChoiceField(queryset=Category.objects.none(), required=False)
    question = forms.CharField(max_length=MAX_TEXT_CHARS, widget=forms.Textarea(attrs={"rows": 3}))
    answer = forms.CharField(
        max_length=MAX_TEXT_CHARS,
        required=False,
        # curation.js finds the answer by this attribute to keep its word count live.
        widget=forms.Textarea(attrs={"rows": 12, "data-wordcount": "id_answer"}),
    )
    note = forms.CharField(
        max_length=200,
        required=False,
        label="Revision note",
        help_text="Optional: what this save changes.",
    )
    version = forms.IntegerField(widget=forms.HiddenInput, required=False, min_value=1)
    stale_edit = forms.IntegerField(widget=forms.HiddenInput, required=False)
    # Set from ?gap_ticket= when a sample is written for a gap; only new samples use it.
    gap_ticket = forms.ModelChoiceField(
        queryset=GapTicket.objects.filter(status=GapTicket.Status.OPEN).select_related("category"),
        widget=forms.HiddenInput,
        required=False,
        error_messages={"invalid_choice": "That gap ticket does not exist or is resolved."},
    )

    def __init__(
        self, *args, sample: Sample | None = None, profile_id: int | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        profile_id = sample.dataset.profile_id if sample is not None else profile_id
        categories = Category.objects.active()
        if sample is not None and sample.category_id:
            # Keep an archived category selectable on samples that already use it.
            categories = Category.objects.filter(pk=sample.category_id) | categories
        self.fields["category"].queryset = categories.order_by("order", "name")
        in_profile(self, "category", profile_id)
        in_profile(self, "gap_ticket", profile_id, "category__profile")
        if sample is not None:
            self.fields["version"].required = True

    @classmethod
    def for_sample(cls, sample: Sample, data=None) -> SampleForm:
        initial = {
            "category": sample.category_id,
            "question": sample.question,
            "answer": sample.answer,
            "version": sample.version,
        }
        return cls(data=data, initial=initial, sample=sample)


class CommentForm(forms.Form):
    body = forms.CharField(
        label="Comment", max_length=MAX_TEXT_CHARS, widget=forms.Textarea(attrs={"rows": 3})
    )


class ReviewForm(forms.Form):
    """The optional (or, for "request changes", required) note on a status change."""

    body = forms.CharField(
        label="Comment",
        max_length=MAX_TEXT_CHARS,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    # Approve sends the version the reviewer read, so a change made meanwhile is not
    # approved unseen.
    version = forms.IntegerField(widget=forms.HiddenInput, required=False, min_value=1)

    def __init__(self, *args, body_required: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["body"].required = body_required
        if body_required:
            self.fields["body"].error_messages["required"] = (
                "Say what should change: the comment is required."
            )


class SampleRefsField(forms.Field):
    """The ticked samples of a bulk form: each checkbox sends "<id>:<version read>"."""

    widget = forms.MultipleHiddenInput
    default_error_messages = {
        "required": "Select at least one sample.",
        "invalid": "Each selected sample must be sent as id:version.",
    }

    def to_python(self, value) -> list[tuple[int, int | None]]:
        refs = []
        for raw in value or []:
            pk, _, version = str(raw).partition(":")
            if not pk.isdigit() or (version and not version.isdigit()):
                raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
            refs.append((int(pk), int(version) if version else None))
        return refs


class BulkActionForm(forms.Form):
    """Submit, approve or archive the ticked samples, each through its single service."""

    action = forms.ChoiceField(
        choices=[("", "With the selected…"), ("submit", "Submit for review"),
                 ("approve", "Approve"), ("archive", "Archive")],
        error_messages={"required": "Choose what to do with the selected samples."},
    )
    sample = SampleRefsField()
    body = forms.CharField(max_length=MAX_TEXT_CHARS, required=False, label="Comment")
    next = forms.CharField(max_length=2000, required=False, widget=forms.HiddenInput)


class RestoreForm(forms.Form):
    revision = forms.IntegerField(min_value=1)
    version = forms.IntegerField(min_value=1)


class DiffForm(forms.Form):
    a = forms.IntegerField(min_value=1)
    b = forms.IntegerField(min_value=1)


class SnapshotForm(forms.Form):
    label = forms.CharField(max_length=200, required=False)


class ImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL (chat format or prompt/completion/category) or CSV.")
    status = forms.ChoiceField(
        label="Import as",
        choices=[(Sample.Status.DRAFT, "Drafts"), (Sample.Status.IN_REVIEW, "In review")],
        initial=Sample.Status.DRAFT,
    )
    default_category = forms.ModelChoiceField(
        queryset=Category.objects.active().order_by("order", "name"),
        required=False,
        empty_label="None: rows must name their category",
        label="Default category",
        help_text="For rows without a category. A values-targeted dataset refuses such rows "
        "unless you choose one.",
    )

    def __init__(self, *args, profile_id: int, **kwargs):
        super().__init__(*args, **kwargs)
        in_profile(self, "default_category", profile_id)

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_IMPORT_BYTES:
            raise forms.ValidationError(
                f"The file is too large ({upload.size:,} bytes; at most {MAX_IMPORT_BYTES:,})."
            )
        return upload


class SampleFilterForm(forms.Form):
    """The dataset page's GET filters. Invalid values are ignored, not reported."""

    q = forms.CharField(
        label="Search",
        required=False,
        max_length=200,
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": "Words in question or answer"}
        ),
    )
    category = forms.ModelChoiceField(
        queryset=Category.objects.order_by("order", "name"),
        required=False,
        empty_label="Any category",
    )
    status = forms.ChoiceField(choices=[("", "Any status"), *Sample.Status.choices], required=False)
    author = forms.ModelChoiceField(queryset=None, required=False, empty_label="Any author")

    def __init__(self, *args, dataset: Dataset, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["author"].queryset = dataset_authors(dataset)
        in_profile(self, "category", dataset.profile_id)

    def filters(self) -> SampleFilters:
        self.is_valid()  # fills cleaned_data with the fields that are valid
        data = self.cleaned_data
        category, author = data.get("category"), data.get("author")
        return SampleFilters(
            category=category.pk if category else None,
            status=data.get("status", ""),
            author=author.pk if author else None,
            text=data.get("q", "").strip(),
        )


# --- gap tickets --------------------------------------------------------------------------


class GapTicketForm(forms.Form):
    """A new gap ticket. The report page links here with every field in the query string,
    ``source`` as a JSON string."""

    category = forms.ModelChoiceField(queryset=Category.objects.active().order_by("order", "name"))
    title = forms.CharField(max_length=200, help_text="The gap, in a few words.")
    description = forms.CharField(
        required=False,
        max_length=MAX_TEXT_CHARS,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="What the model did, and what it should do instead.",
    )
    # Filled from the report's link and shown formatted beside the form; nobody types JSON.
    source = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, profile_id: int, **kwargs):
        super().__init__(*args, **kwargs)
        in_profile(self, "category", profile_id)

    def clean_source(self) -> dict:
        text = self.cleaned_data["source"].strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError as error:
            raise forms.ValidationError(f"The source is not valid JSON ({error}).") from None
        if not isinstance(value, dict):
            raise forms.ValidationError('The source must be a JSON object, such as {"study": 3}.')
        return value

    def source_value(self) -> dict:
        """The source this form carries (from the report link or the posted form), for
        display; {} when there is none or it is not an object."""
        text = self["source"].value() or ""
        try:
            value = json.loads(text) if text.strip() else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class GapTicketFilterForm(forms.Form):
    """The ticket list's GET filters. Invalid values are ignored, not reported."""

    category = forms.ModelChoiceField(
        queryset=Category.objects.order_by("order", "name"),
        required=False,
        empty_label="Any category",
    )
    status = forms.ChoiceField(
        choices=[("", "Any status"), *GapTicket.Status.choices], required=False
    )

    def __init__(self, *args, profile_id: int, **kwargs):
        super().__init__(*args, **kwargs)
        in_profile(self, "category", profile_id)

    def filters(self) -> dict:
        self.is_valid()  # fills cleaned_data with the fields that are valid
        category = self.cleaned_data.get("category")
        return {
            "category": category.pk if category else None,
            "status": self.cleaned_data.get("status", ""),
        }


class ResolveSnapshotForm(forms.Form):
    """Pick the open tickets with approved samples in a dataset to resolve in a new
    snapshot of it."""

    tickets = forms.ModelMultipleChoiceField(
        queryset=GapTicket.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Pick at least one gap ticket to resolve."},
    )
    label = forms.CharField(max_length=200, required=False, label="Snapshot label")

    def __init__(self, *args, ready, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tickets"].queryset = ready
        self.fields["tickets"].label_from_instance = (
            lambda ticket: f"{ticket.title} ({ticket.category.name})"
        )
