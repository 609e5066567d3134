from django.urls import path

from curation import (
    gap_views,
    history_views,
    import_views,
    review_views,
    sample_views,
    snapshot_views,
    views,
)

app_name = "curation"

urlpatterns = [
    # categories
    path("categories/", views.category_list, name="category-list"),
    path("categories/new/", views.category_create, name="category-create"),
    path("categories/preset/", views.preset_load, name="preset-load"),
    path("categories/<int:pk>/edit/", views.category_edit, name="category-edit"),
    path("categories/<int:pk>/move/", views.category_move, name="category-move"),
    path("categories/<int:pk>/archive/", views.category_archive, name="category-archive"),
    path("categories/<int:pk>/restore/", views.category_restore, name="category-restore"),
    # datasets
    path("datasets/", views.dataset_list, name="dataset-list"),
    path("datasets/new/", views.dataset_create, name="dataset-create"),
    path("datasets/<int:pk>/", views.dataset_detail, name="dataset-detail"),
    path("datasets/<int:pk>/edit/", views.dataset_edit, name="dataset-edit"),
    path("datasets/<int:pk>/coverage/", views.dataset_coverage_view, name="dataset-coverage"),
    path("datasets/<int:pk>/import/", import_views.dataset_import, name="dataset-import"),
    path("imports/<int:pk>/", import_views.import_preview, name="import-preview"),
    path("datasets/<int:pk>/samples/new/", sample_views.sample_create, name="sample-create"),
    path("datasets/<int:pk>/snapshots/", snapshot_views.snapshot_list, name="snapshot-list"),
    path(
        "datasets/<int:pk>/snapshots/new/", snapshot_views.snapshot_create, name="snapshot-create"
    ),
    # samples
    path("samples/<int:pk>/", sample_views.sample_detail, name="sample-detail"),
    path("samples/<int:pk>/edit/", sample_views.sample_edit, name="sample-edit"),
    path("samples/<int:pk>/submit/", sample_views.sample_submit, name="sample-submit"),
    path(
        "samples/<int:pk>/request-changes/",
        sample_views.sample_request_changes,
        name="sample-request-changes",
    ),
    path("samples/<int:pk>/approve/", sample_views.sample_approve, name="sample-approve"),
    path("samples/<int:pk>/archive/", sample_views.sample_archive, name="sample-archive"),
    path("samples/<int:pk>/reopen/", sample_views.sample_reopen, name="sample-reopen"),
    path("samples/<int:pk>/comment/", sample_views.sample_comment, name="sample-comment"),
    path("samples/<int:pk>/history/", history_views.sample_history, name="sample-history"),
    path("samples/<int:pk>/diff/", history_views.sample_diff, name="sample-diff"),
    path("samples/<int:pk>/restore/", history_views.sample_restore, name="sample-restore"),
    # review: the queue and bulk actions (review_views.py)
    path("review/", review_views.review_queue, name="review-queue"),
    path("samples/bulk/", review_views.sample_bulk, name="sample-bulk"),
    path(
        "stale-edits/<int:pk>/resolve/", history_views.stale_edit_resolve, name="stale-edit-resolve"
    ),
    path("word-count/", sample_views.word_count, name="word-count"),
    # snapshots
    path("snapshots/<int:pk>/", snapshot_views.snapshot_detail, name="snapshot-detail"),
    path(
        "snapshots/<int:pk>/download/", snapshot_views.snapshot_download, name="snapshot-download"
    ),
    # gap tickets: the iteration loop (gap_views.py)
    path("gaps/", gap_views.gap_list, name="gap-list"),
    path("gaps/new/", gap_views.gap_create, name="gap-create"),
    path("gaps/<int:pk>/", gap_views.gap_detail, name="gap-detail"),
    path("gaps/<int:pk>/resolve/", gap_views.gap_resolve, name="gap-resolve"),
    path(
        "datasets/<int:pk>/gaps/resolve/",
        gap_views.gap_resolve_snapshot,
        name="gap-resolve-snapshot",
    ),
]
