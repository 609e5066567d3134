"""Django admin: read-mostly views for support. Workflows (open, close, screen, rate) go
through the evaluation pages and API, which call the services."""

from django.contrib import admin

from evaluation.models import (
    Prompt,
    PromptSet,
    Rating,
    RatingRevision,
    Study,
    StudyArm,
    StudyEvent,
    StudyOutput,
)


class PromptInline(admin.TabularInline):
    model = Prompt
    extra = 0
    fields = ["order", "category", "text"]


@admin.register(PromptSet)
class PromptSetAdmin(admin.ModelAdmin):
    list_display = ["name", "locked_at", "created_at"]
    search_fields = ["name"]
    inlines = [PromptInline]

    def get_readonly_fields(self, request, obj=None):
        return ["locked_at", "copied_from"]


class StudyArmInline(admin.TabularInline):
    model = StudyArm
    extra = 0
    readonly_fields = ["arm", "label", "model_version", "size_tag", "order"]
    can_delete = False


class StudyEventInline(admin.TabularInline):
    model = StudyEvent
    extra = 0
    readonly_fields = ["kind", "actor", "at", "detail"]
    can_delete = False


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "status",
        "prompt_set",
        "raters_per_output",
        "created_at",
        "closed_at",
        "unblinded_at",
    ]
    list_filter = ["status"]
    search_fields = ["name"]
    inlines = [StudyArmInline, StudyEventInline]
    readonly_fields = [
        "status",
        "sampling_job",
        "prompt_ids",
        "opened_at",
        "rating_opened_at",
        "closed_at",
        "unblinded_at",
        "unblinded_by",
        "created_by",
    ]
    filter_horizontal = ["raters"]


@admin.register(StudyOutput)
class StudyOutputAdmin(admin.ModelAdmin):
    list_display = ["public_id", "study", "arm", "screening", "completed_count", "quota"]
    list_filter = ["screening", "study"]
    search_fields = ["public_id", "text"]
    readonly_fields = [
        "study",
        "arm",
        "prompt",
        "sample_index",
        "generation",
        "public_id",
        "quota",
        "completed_count",
        "text",
    ]


class RatingRevisionInline(admin.TabularInline):
    """The rater's own changes of this rating: what each one replaced."""

    model = RatingRevision
    extra = 0
    readonly_fields = ["previous_score", "previous_comment", "score", "comment", "revised_at"]
    can_delete = False


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    inlines = [RatingRevisionInline]
    list_display = ["output", "rater", "status", "score", "claimed_at", "completed_at"]
    list_filter = ["status", "study"]
    readonly_fields = [
        "study",
        "output",
        "rater",
        "status",
        "score",
        "claimed_at",
        "expires_at",
        "completed_at",
    ]


from evaluation import admin_pairwise  # noqa: E402, F401  (registers the pairwise models)
