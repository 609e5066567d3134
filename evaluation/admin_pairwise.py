"""Django admin for the pairwise and preference models: read-only views for support.
Judging, building and freezing go through the evaluation pages and API (their services keep
the quotas, the blinding and the revision history), so nothing here can add, edit or delete.
Imported by ``evaluation/admin.py``."""

from django.contrib import admin

from evaluation.pairwise_models import PairJudgment, PairJudgmentRevision, StudyPair
from evaluation.preference_models import (
    PreferenceAnswerRevision,
    PreferencePair,
    PreferenceSet,
    PreferenceSnapshot,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Every field shown, none editable; no add or delete (a removed judgment or pair would
    change a report or a frozen snapshot's provenance behind its service)."""

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(StudyPair)
class StudyPairAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "study", "prompt", "sample_index", "completed_count", "quota"]
    list_filter = ["study"]
    search_fields = ["public_id"]


class PairJudgmentRevisionInline(ReadOnlyInline):
    model = PairJudgmentRevision


@admin.register(PairJudgment)
class PairJudgmentAdmin(ReadOnlyAdmin):
    inlines = [PairJudgmentRevisionInline]
    list_display = ["pair", "rater", "status", "verdict", "claimed_at", "completed_at"]
    list_filter = ["status", "study"]


class PreferenceAnswerRevisionInline(ReadOnlyInline):
    model = PreferenceAnswerRevision


@admin.register(PreferencePair)
class PreferencePairAdmin(ReadOnlyAdmin):
    inlines = [PreferenceAnswerRevisionInline]
    list_display = ["preference_set", "prompt", "chosen", "rejected", "dropped"]
    list_filter = ["preference_set", "dropped"]


@admin.register(PreferenceSet)
class PreferenceSetAdmin(ReadOnlyAdmin):
    list_display = ["study", "source", "margin", "created_by", "created_at"]
    list_filter = ["source"]


@admin.register(PreferenceSnapshot)
class PreferenceSnapshotAdmin(ReadOnlyAdmin):
    list_display = ["preference_set", "content_hash", "pair_count", "created_by", "created_at"]
    search_fields = ["content_hash"]
