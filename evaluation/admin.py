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
from evaluation.studies.rater_pool import rater_pool_candidates
from palmsweb.lib.admin import ProfileFixedAdmin


class PromptInline(admin.TabularInline):
    """A set's prompts, in categories of the set's own profile only."""

    model = Prompt
    extra = 0
    fields = ["order", "category", "text"]

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        categories = formset.form.base_fields["category"]
        categories.queryset = categories.queryset.filter(profile_id=obj.profile_id)
        return formset


@admin.register(PromptSet)
class PromptSetAdmin(ProfileFixedAdmin):
    list_display = ["name", "profile", "locked_at", "created_at"]
    list_filter = ["profile"]
    search_fields = ["name"]
    inlines = [PromptInline]

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "locked_at", "copied_from"]

    def get_inlines(self, request, obj):
        # Prompts come once the set has its profile (their categories are that profile's).
        return [] if obj is None else super().get_inlines(request, obj)


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
    # The design (prompt set, the positions frozen at opening) is the study page's to set;
    # the rater pool too once the study is open (its page checks the pool, keeps the quota).
    readonly_fields = [
        "status",
        "prompt_set",
        "position_versions",
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

    def has_add_permission(self, request):
        return False  # a study is made with its arms, on the study page or the API

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        opened = obj is not None and obj.status != Study.Status.DRAFT
        return [*fields, "raters"] if opened else fields

    def get_form(self, request, obj=None, **kwargs):
        # A draft's pool, as on the study page: its profile's raters who are not admins. A
        # choice outside them is refused by the form ("Select a valid choice"), not saved.
        form = super().get_form(request, obj, **kwargs)
        if obj is not None and "raters" in form.base_fields:
            form.base_fields["raters"].queryset = rater_pool_candidates(obj.profile_id)
        return form


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
