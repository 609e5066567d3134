"""Admin for training models. Jobs are launched from the training pages (or the API), which
go through the services; here every job field is read-only and a job can only be
cancelled."""

from django.contrib import admin, messages

from training import services
from training.models import BaseModel, FineTuneJob, Generation, ModelVersion, SamplingJob


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "parameter_count", "is_default", "created_at"]
    list_filter = ["kind", "is_default"]
    search_fields = ["name", "model_id", "path"]
    readonly_fields = ["kind", "created_at"]

    def has_add_permission(self, request):
        # Registering goes through base_model_create, which also creates the base version.
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "arm", "base_model", "is_adapter", "created_at"]
    list_filter = ["arm", "base_model"]
    search_fields = ["name"]
    readonly_fields = [
        "base_model",
        "arm",
        "path",
        "remote_model_id",
        "is_adapter",
        "parameter_count",
        "metadata",
        "created_at",
    ]

    def has_add_permission(self, request):
        return False


class ReadOnlyJobAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "status",
        "progress_done",
        "progress_total",
        "created_by",
        "created_at",
    ]
    list_filter = ["status"]
    actions = ["cancel_jobs"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.concrete_fields] + [
            field.name for field in self.model._meta.many_to_many
        ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # Viewing only; saving would write the read-only fields back anyway.
        return False

    @admin.action(description="Cancel the selected jobs")
    def cancel_jobs(self, request, queryset):
        for job in queryset:
            if not job.is_finished:
                services.job_cancel(job=job)
        self.message_user(request, "Cancel requested.", messages.SUCCESS)


@admin.register(FineTuneJob)
class FineTuneJobAdmin(ReadOnlyJobAdmin):
    list_display = [
        "__str__",
        "status",
        "arm",
        "method",
        "backend",
        "progress_done",
        "progress_total",
        "created_at",
    ]
    list_filter = ["status", "arm", "method", "backend"]
    list_select_related = ["base_model", "snapshot"]


@admin.register(SamplingJob)
class SamplingJobAdmin(ReadOnlyJobAdmin):
    pass


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = ["job", "model_version", "prompt_index", "sample_index", "tokens_generated"]
    list_filter = ["model_version"]
    list_select_related = ["job", "model_version"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Generation._meta.concrete_fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
