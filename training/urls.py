from django.urls import path

from training import screening_views, sweep_views, views

app_name = "training"

urlpatterns = [
    # base models
    path("base-models/", views.basemodel_list, name="basemodel-list"),
    path("base-models/new/", views.basemodel_create, name="basemodel-create"),
    # fine-tunes
    path("finetunes/", views.finetune_list, name="finetune-list"),
    path("finetunes/new/", views.finetune_create, name="finetune-create"),
    path("finetunes/estimate/", views.finetune_estimate, name="finetune-estimate"),
    path("finetunes/<int:pk>/", views.finetune_detail, name="finetune-detail"),
    path("finetunes/<int:pk>/progress/", views.finetune_progress, name="finetune-progress"),
    path("finetunes/<int:pk>/cancel/", views.finetune_cancel, name="finetune-cancel"),
    path("finetunes/<int:pk>/retry/", views.finetune_retry, name="finetune-retry"),
    path("finetunes/<int:pk>/retrain/", views.finetune_retrain, name="finetune-retrain"),
    # sweeps (grids of fine-tunes)
    path("sweeps/", sweep_views.sweep_list, name="sweep-list"),
    path("sweeps/new/", sweep_views.sweep_create, name="sweep-create"),
    path("sweeps/<int:pk>/", sweep_views.sweep_detail, name="sweep-detail"),
    path("sweeps/<int:pk>/cancel/", sweep_views.sweep_cancel, name="sweep-cancel"),
    path("sweeps/<int:pk>/promote/", sweep_views.sweep_promote, name="sweep-promote"),
    path(
        "sweeps/<int:pk>/delete-weights/",
        sweep_views.sweep_delete_weights,
        name="sweep-delete-weights",
    ),
    # model versions
    path("model-versions/", views.modelversion_list, name="modelversion-list"),
    # sampling
    path("screening/", screening_views.screening_list, name="screening-list"),
    path("screening/<int:pk>/", screening_views.screening_detail, name="screening-detail"),
    path("sampling/", views.sampling_list, name="sampling-list"),
    path("sampling/new/", views.sampling_create, name="sampling-create"),
    path("sampling/<int:pk>/", views.sampling_detail, name="sampling-detail"),
    path("sampling/<int:pk>/progress/", views.sampling_progress, name="sampling-progress"),
    path("sampling/<int:pk>/cancel/", views.sampling_cancel, name="sampling-cancel"),
    path("sampling/<int:pk>/retry/", views.sampling_retry, name="sampling-retry"),
]
