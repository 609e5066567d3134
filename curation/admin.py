from django.contrib import admin

from curation.models import Category, Comment, Dataset, Sample, SampleRevision, Snapshot


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "target_count", "order", "archived_at"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "min_words", "max_words", "allow_self_approval"]


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
