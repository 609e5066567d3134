from django.contrib import admin
from django.db import transaction

from curation.categories import current_position_version
from curation.models import Category, Comment, Dataset, Sample, SampleRevision, Snapshot
from palmsweb.lib.admin import ProfileFixedAdmin


@admin.register(Category)
class CategoryAdmin(ProfileFixedAdmin):
    """A saved position or guidance becomes a new numbered version (author: the admin), as
    on the category's page: snapshots and studies record versions, never the live text."""

    list_display = ["name", "profile", "target_count", "order", "archived_at"]
    list_filter = ["profile"]
    prepopulated_fields = {"slug": ["name"]}

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            current_position_version(obj, user=request.user)


@admin.register(Dataset)
class DatasetAdmin(ProfileFixedAdmin):
    list_display = ["name", "profile", "kind", "min_words", "max_words", "allow_self_approval"]
    list_filter = ["profile"]


class RevisionInline(admin.TabularInline):
    model = SampleRevision
    extra = 0
    can_delete = False
    readonly_fields = ["number", "question", "answer", "category", "author", "note", "created_at"]


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ["question", "dataset", "category", "status", "version", "author"]
    list_filter = ["dataset", "status", "category"]
    search_fields = ["question", "answer"]
    readonly_fields = ["version"]
    inlines = [RevisionInline]


@admin.register(Comment)
class CommentAdmin(admin.ModelAdmin):
    list_display = ["sample", "kind", "author", "created_at"]


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ["dataset", "label", "content_hash", "sample_count", "created_at"]
    readonly_fields = [f.name for f in Snapshot._meta.fields]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
