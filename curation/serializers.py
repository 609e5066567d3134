"""DRF serializers for the curation API.

Input serializers validate what a client sends (and refuse keys they do not know);
output serializers render models. Views pass validated data to ``curation.services``.
"""

from __future__ import annotations

from django.db.models import Max
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from curation.importing import IMPORTABLE_STATUSES
from curation.models import (
    BYTES_DEFINITION,
    MAX_TEXT_CHARS,
    WORDS_DEFINITION,
    Category,
    Comment,
    Dataset,
    GapTicket,
    PositionVersion,
    Sample,
    SampleRevision,
    Snapshot,
)
from palmsweb.lib.drf import MAX_BIGINT, RejectUnknownFieldsMixin
from palmsweb.profiles import ProfileScopedPrimaryKeyField, profile_choice_field
from palmsweb.roles import Role

# Versions and revision numbers are stored as 32-bit integers (a stale edit keeps the
# version it started from): anything larger is refused here, not by the database.
MAX_VERSION = 2**31 - 1


class UsernameField(serializers.SlugRelatedField):
    """A user as their username; null once the user is deleted (the keys are SET_NULL)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_null", True)
        super().__init__(slug_field="username", read_only=True, **kwargs)


# --- categories ------------------------------------------------------------------------


def profile_field(help_text: str):
    """The writable ``profile`` of a new row: one the requesting user curates in."""
    return profile_choice_field((Role.CURATOR,), help_text)


PROFILE_HELP = (
    "Value profile id. Set on creation (optional when you curate in one profile only); "
    "never changes afterwards."
)


class CategorySerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    profile = profile_field(PROFILE_HELP)

    class Meta:
        model = Category
        validators = []  # uniqueness per profile is the service's rule; its message is clearer
        fields = [
            "id", "profile", "name", "slug", "position", "guidance", "target_count", "order",
            "position_version", "is_archived", "archived_at", "created_at", "updated_at",
        ]
        read_only_fields = [
            "slug", "order", "is_archived", "archived_at", "created_at", "updated_at",
        ]
        extra_kwargs = {
            # Uniqueness (case-insensitive) is the service's rule; its message is clearer.
            "name": {"validators": []},
            "guidance": {"required": False},
            "target_count": {"required": False},
        }

    is_archived = serializers.BooleanField(read_only=True)
    position_version = serializers.SerializerMethodField(
        help_text="The number of the current version of the position and guidance (see "
        "/versions/); studies and snapshots freeze a version by this number."
    )

    def get_position_version(self, category: Category) -> int | None:
        # Lists annotate it (one query for the page); a single category asks once.
        known = getattr(category, "latest_position_version", None)
        if known is not None:
            return known
        return category.position_versions.aggregate(n=Max("number"))["n"]


class PositionVersionSerializer(serializers.ModelSerializer):
    """One saved version of a category's position and guidance (read-only)."""

    author = serializers.CharField(
        source="author.username", default=None, allow_null=True, read_only=True
    )
    position_sha256 = serializers.CharField(read_only=True)

    class Meta:
        model = PositionVersion
        fields = ["number", "position", "guidance", "position_sha256", "author", "created_at"]
        read_only_fields = fields


class CategoryReorderSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="Every category id of the profile, in the new order.",
    )
    profile = profile_field("Value profile id (optional when you curate in one profile only).")


class PresetLoadSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    # A plain id, checked by the view like an object's profile: 404 for a profile the user
    # holds no role in, 403 for one where they hold a role but do not curate.
    profile = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_BIGINT,
        help_text="Value profile id to load the preset into (optional when you curate in one "
        "profile only).",
    )


class PresetLoadResultSerializer(serializers.Serializer):
    profile = serializers.IntegerField()
    created = serializers.IntegerField(help_text="PALMS categories added now.")
    already_there = serializers.IntegerField(
        help_text="PALMS categories the profile already had (by name): left unchanged."
    )


# --- datasets --------------------------------------------------------------------------


class DatasetSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    created_by = UsernameField()
    profile = profile_field(PROFILE_HELP)

    class Meta:
        model = Dataset
        validators = []  # uniqueness per profile is the service's rule
        fields = [
            "id", "profile", "name", "kind", "description", "min_words", "max_words",
            "system_message", "allow_self_approval", "created_by", "created_at",
        ]
        read_only_fields = ["created_at"]
        extra_kwargs = {"name": {"validators": []}}


# --- samples ---------------------------------------------------------------------------


class SampleSerializer(serializers.ModelSerializer):
    author = UsernameField()
    updated_by = UsernameField()
    category_name = serializers.CharField(source="category.name", read_only=True, default=None)
    word_count = serializers.IntegerField(read_only=True)
    within_limits = serializers.BooleanField(read_only=True)

    class Meta:
        model = Sample
        fields = [
            "id", "dataset", "category", "category_name", "question", "answer", "status",
            "version", "word_count", "within_limits", "author", "updated_by", "created_at",
            "updated_at", "gap_ticket",
        ]
        read_only_fields = fields


def _active_category_or_current(category: Category | None, current: Category | None):
    """A sample may keep an archived category but not be moved into one."""
    if category is not None and category.is_archived and category != current:
        raise serializers.ValidationError(f"Category {category.name!r} is archived.")
    return category


class SampleCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    dataset = ProfileScopedPrimaryKeyField(queryset=Dataset.objects.all())
    category = ProfileScopedPrimaryKeyField(
        queryset=Category.objects.all(), allow_null=True, required=False, default=None
    )
    question = serializers.CharField(max_length=MAX_TEXT_CHARS, trim_whitespace=False)
    answer = serializers.CharField(
        max_length=MAX_TEXT_CHARS, allow_blank=True, required=False, default="",
        trim_whitespace=False,
    )
    gap_ticket = ProfileScopedPrimaryKeyField(
        profile_path="category__profile",
        queryset=GapTicket.objects.filter(status=GapTicket.Status.OPEN),
        allow_null=True, required=False, default=None,
        help_text="The open gap ticket this sample is written to close.",
    )

    def validate_category(self, category):
        return _active_category_or_current(category, None)


class SampleUpdateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """PUT needs every field; PATCH only ``version`` and what changes."""

    version = serializers.IntegerField(
        min_value=1, max_value=MAX_VERSION,
        help_text="The version your edit started from (optimistic concurrency).",
    )
    category = ProfileScopedPrimaryKeyField(
        queryset=Category.objects.all(), allow_null=True
    )
    question = serializers.CharField(max_length=MAX_TEXT_CHARS, trim_whitespace=False)
    answer = serializers.CharField(
        max_length=MAX_TEXT_CHARS, allow_blank=True, trim_whitespace=False
    )

    def validate_category(self, category):
        return _active_category_or_current(category, self.instance.category)

    def validate(self, attrs):
        if "version" not in attrs:
            # PATCH makes every field optional; the version never is.
            raise serializers.ValidationError({"version": ["This field is required."]})
        return attrs


class StaleEditSerializer(serializers.Serializer):
    """The refused edit, as kept in a StaleEdit row."""

    question = serializers.CharField()
    answer = serializers.CharField()
    category = serializers.IntegerField(source="category_id", allow_null=True)
    base_version = serializers.IntegerField()


class StaleEditConflictSerializer(serializers.Serializer):
    """The body of a 409: the saved version and the edit that was refused (and kept)."""

    detail = serializers.CharField()
    current = SampleSerializer()
    yours = StaleEditSerializer()
    stale_edit_id = serializers.IntegerField()


class SampleActionSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    body = serializers.CharField(
        max_length=MAX_TEXT_CHARS, allow_blank=True, required=False, default="",
        help_text="A comment recorded with the status change (required to request changes).",
    )


class SampleApproveSerializer(SampleActionSerializer):
    version = serializers.IntegerField(
        min_value=1, required=False, default=None,
        help_text="The version you reviewed. If the sample changed since, the approval is "
        "refused (400) instead of approving text you have not read.",
    )


class ApprovalCheckSerializer(serializers.Serializer):
    """What approval would refuse now, before anyone submits or approves."""

    status = serializers.CharField()
    version = serializers.IntegerField()
    content_problems = serializers.ListField(
        child=serializers.CharField(),
        help_text="Refused whoever reviews: word limits, category, unmerged edits.",
    )
    reviewer_problems = serializers.ListField(
        child=serializers.CharField(),
        help_text="Why you in particular may not approve (you wrote or revised it).",
    )
    can_approve = serializers.BooleanField(
        help_text="True when the sample is in review and you may approve it now."
    )
    review_base_version = serializers.IntegerField(
        allow_null=True,
        help_text="In review: the version submitted (the diff starts there); else null.",
    )
    changed_since_submitted = serializers.BooleanField()
    revised_since_submitted_by = serializers.ListField(child=serializers.CharField())


class BulkItemSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    id = serializers.IntegerField(min_value=1)
    version = serializers.IntegerField(
        min_value=1, required=False, default=None,
        help_text="Approve only: the version you reviewed (refused if it changed since).",
    )


class BulkActionSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    action = serializers.ChoiceField(choices=["submit", "approve", "archive"])
    samples = BulkItemSerializer(many=True, allow_empty=False)
    body = serializers.CharField(
        max_length=MAX_TEXT_CHARS, allow_blank=True, required=False, default="",
        help_text="A comment recorded on each sample with its status change.",
    )

    def validate_samples(self, items):
        from curation.review import MAX_BULK_SAMPLES

        if len(items) > MAX_BULK_SAMPLES:
            raise serializers.ValidationError(f"At most {MAX_BULK_SAMPLES} samples at a time.")
        return items


class BulkRefusalSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    detail = serializers.CharField()


class BulkResultSerializer(serializers.Serializer):
    done = serializers.ListField(child=serializers.IntegerField(), help_text="Sample ids.")
    refused = BulkRefusalSerializer(many=True)


class CommentInputSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    body = serializers.CharField(max_length=MAX_TEXT_CHARS)


class CommentSerializer(serializers.ModelSerializer):
    author = UsernameField()

    class Meta:
        model = Comment
        fields = ["id", "sample", "author", "kind", "body", "sample_version", "created_at"]
        read_only_fields = fields


class RevisionSerializer(serializers.ModelSerializer):
    author = UsernameField()

    class Meta:
        model = SampleRevision
        fields = ["id", "number", "question", "answer", "category", "author", "note",
                  "created_at"]
        read_only_fields = fields


class RestoreSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    revision = serializers.IntegerField(
        min_value=1, max_value=MAX_VERSION, help_text="The revision number to bring back."
    )
    version = serializers.IntegerField(
        min_value=1, max_value=MAX_VERSION, help_text="The sample's current version."
    )


# --- snapshots -------------------------------------------------------------------------


class SnapshotSerializer(serializers.ModelSerializer):
    dataset_name = serializers.CharField(source="dataset.name", read_only=True)
    created_by = UsernameField()

    class Meta:
        model = Snapshot
        fields = [
            "id", "dataset", "dataset_name", "label", "content_hash", "sample_count",
            "word_count", "byte_count", "created_by", "created_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "word_count": {"help_text": f"Whitespace-separated {WORDS_DEFINITION}."},
            "byte_count": {"help_text": f"{BYTES_DEFINITION}, summed (as coverage counts)."},
        }


class SnapshotItemSerializer(serializers.Serializer):
    category = serializers.CharField(allow_null=True)
    question = serializers.CharField()
    answer = serializers.CharField()


class SnapshotPositionSerializer(serializers.Serializer):
    """A category's position version as the snapshot's canonical content records it."""

    category = serializers.CharField()
    version = serializers.IntegerField()
    position = serializers.CharField()
    guidance = serializers.CharField(allow_blank=True)


class SnapshotDetailSerializer(SnapshotSerializer):
    system_message = serializers.SerializerMethodField()
    items = serializers.SerializerMethodField()
    positions = serializers.SerializerMethodField(
        help_text="The position versions of the snapshot's categories, from its canonical "
        "content (the hash covers them); empty for snapshots taken before positions had "
        "versions."
    )
    hash_matches_content = serializers.BooleanField(read_only=True)

    class Meta(SnapshotSerializer.Meta):
        fields = [*SnapshotSerializer.Meta.fields, "system_message", "items", "positions",
                  "hash_matches_content"]
        read_only_fields = fields

    def _payload(self, snapshot: Snapshot) -> dict:
        """The canonical content, parsed once per snapshot for the three fields that read
        it (it holds every sample; a snapshot never changes)."""
        parsed = self.__dict__.setdefault("_payloads", {})
        if snapshot.pk not in parsed:
            parsed[snapshot.pk] = snapshot.payload()
        return parsed[snapshot.pk]

    def get_system_message(self, snapshot: Snapshot) -> str:
        return self._payload(snapshot).get("system_message") or ""

    @extend_schema_field(SnapshotItemSerializer(many=True))
    def get_items(self, snapshot: Snapshot) -> list[dict]:
        return SnapshotItemSerializer(self._payload(snapshot)["items"], many=True).data

    @extend_schema_field(SnapshotPositionSerializer(many=True))
    def get_positions(self, snapshot: Snapshot) -> list[dict]:
        positions = self._payload(snapshot).get("positions", [])
        return SnapshotPositionSerializer(positions, many=True).data


class SnapshotCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    dataset = ProfileScopedPrimaryKeyField(queryset=Dataset.objects.all())
    label = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")


# --- imports and tokens ----------------------------------------------------------------


class ImportSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    file = serializers.FileField(help_text="JSONL (chat or prompt/completion) or CSV, ≤ 5 MB.")
    status = serializers.ChoiceField(
        choices=sorted(IMPORTABLE_STATUSES), required=False, default=Sample.Status.DRAFT,
        help_text="Status of the new samples; only admins may import approved samples.",
    )
    default_category = ProfileScopedPrimaryKeyField(
        queryset=Category.objects.all(), required=False, default=None, allow_null=True,
        help_text="Category id for rows without one. Without it, a values-targeted dataset "
        "refuses such rows.",
    )
    dry_run = serializers.BooleanField(
        required=False, default=False,
        help_text="Only check the file and say what it would import (200); write nothing.",
    )

    def validate_default_category(self, category):
        if category is not None and category.is_archived:
            raise serializers.ValidationError(f"Category {category.name!r} is archived.")
        return category


class ImportCategoryCountSerializer(serializers.Serializer):
    category = serializers.CharField(help_text='A category name, or "(no category)".')
    count = serializers.IntegerField()


class ImportPreviewSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    count = serializers.IntegerField(help_text="Rows the file holds.")
    per_category = ImportCategoryCountSerializer(many=True)
    would_import = serializers.BooleanField(help_text="True when the file has no problem.")
    errors = serializers.ListField(child=serializers.DictField(), help_text="line, message")


class ImportResultSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    sample_ids = serializers.ListField(child=serializers.IntegerField())


class ImportLineErrorSerializer(serializers.Serializer):
    line = serializers.IntegerField(help_text="1-based; 0 means the file as a whole.")
    message = serializers.CharField()


class ImportRejectedSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = ImportLineErrorSerializer(many=True)


# --- gap tickets -------------------------------------------------------------------------


class GapTicketSerializer(serializers.ModelSerializer):
    category_name = serializers.CharField(source="category.name", read_only=True)
    created_by = UsernameField()
    resolved_by = UsernameField()
    sample_ids = serializers.PrimaryKeyRelatedField(source="samples", many=True, read_only=True)

    class Meta:
        model = GapTicket
        fields = [
            "id", "category", "category_name", "title", "description", "source", "status",
            "created_by", "created_at", "resolved_by", "resolved_at", "resolved_in_snapshot",
            "sample_ids",
        ]
        read_only_fields = fields


class GapTicketCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    category = ProfileScopedPrimaryKeyField(queryset=Category.objects.all())
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(
        max_length=MAX_TEXT_CHARS, allow_blank=True, required=False, default=""
    )
    source = serializers.JSONField(
        required=False, default=dict,
        help_text="Where the gap was found, e.g. {\"study\": 3, \"output\": \"ab12cd34\"}.",
    )

    def validate_source(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("Expected a JSON object.")
        return value


class GapTicketResolveSnapshotSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    dataset = ProfileScopedPrimaryKeyField(queryset=Dataset.objects.all())
    tickets = ProfileScopedPrimaryKeyField(
        profile_path="category__profile", queryset=GapTicket.objects.all(), many=True,
        allow_empty=False,
    )
    label = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")
