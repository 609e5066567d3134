from django.urls import path

from evaluation.report import dpo_views, exit_kit_views, preference_views
from evaluation.report import views as report_views
from evaluation.studies import pairwise_views, rating_views, views
from evaluation.studies import prompt_set_copy_views as copy_views

app_name = "evaluation"

urlpatterns = [
    # prompt sets
    path("prompt-sets/", views.prompt_set_list, name="prompt-set-list"),
    path("prompt-sets/new/", views.prompt_set_create, name="prompt-set-create"),
    path("prompt-sets/<int:pk>/", views.prompt_set_detail, name="prompt-set-detail"),
    path("prompt-sets/<int:pk>/edit/", views.prompt_set_edit, name="prompt-set-edit"),
    path("prompt-sets/<int:pk>/copy/", copy_views.prompt_set_copy, name="prompt-set-copy"),
    path(
        "prompt-sets/<int:pk>/copy-to-profile/",
        copy_views.prompt_set_copy_to_profile,
        name="prompt-set-copy-to-profile",
    ),
    path("prompt-sets/<int:pk>/prompts/new/", views.prompt_add, name="prompt-add"),
    path("prompt-sets/<int:pk>/prompts/lines/", views.prompts_add_lines, name="prompt-add-lines"),
    path("prompts/<int:pk>/edit/", views.prompt_edit, name="prompt-edit"),
    path("prompts/<int:pk>/delete/", views.prompt_delete, name="prompt-delete"),
    path("prompts/<int:pk>/move/", views.prompt_move, name="prompt-move"),
    # studies (admins manage, researchers follow)
    path("studies/", views.study_list, name="study-list"),
    path("studies/new/", views.study_create, name="study-create"),
    path("studies/estimate/", views.study_estimate_view, name="study-estimate"),
    path("studies/<int:pk>/", views.study_detail, name="study-detail"),
    path("studies/<int:pk>/edit/", views.study_edit, name="study-edit"),
    path("studies/<int:pk>/status/", views.study_status, name="study-status"),
    path("studies/<int:pk>/open/", views.study_open, name="study-open"),
    path("studies/<int:pk>/close/", views.study_close, name="study-close"),
    path("studies/<int:pk>/unblind/", views.study_unblind, name="study-unblind"),
    path("studies/<int:pk>/results/", report_views.study_report, name="study-results"),
    path(
        "studies/<int:pk>/pairwise-results/",
        report_views.study_pairwise_report,
        name="study-pairwise-results",
    ),
    path("studies/<int:pk>/outputs/", views.study_outputs_view, name="study-outputs"),
    path(
        "studies/<int:pk>/outputs/reveal/", views.study_outputs_reveal, name="study-outputs-reveal"
    ),
    path("outputs/<int:pk>/clear/", views.output_clear, name="output-clear"),
    path("outputs/<int:pk>/exclude/", views.output_exclude, name="output-exclude"),
    # rating (raters only; outputs travel by public id)
    path("rate/", rating_views.rate_home, name="rate-home"),
    path("rate/<int:pk>/", rating_views.rate, name="rate"),
    path("rate/<int:pk>/next/", rating_views.rate_claim, name="rate-claim"),
    path("rate/<int:pk>/instructions/", rating_views.rate_instructions, name="rate-instructions"),
    path("rate/<int:pk>/last/", rating_views.rate_revise, name="rate-revise"),
    path("rate/<int:pk>/<str:public_id>/submit/", rating_views.rate_submit, name="rate-submit"),
    path("rate/<int:pk>/<str:public_id>/skip/", rating_views.rate_skip, name="rate-skip"),
    path("rate/<int:pk>/<str:public_id>/flag/", rating_views.rate_flag, name="rate-flag"),
    # pairwise rating (raters only; pairs travel by public id)
    path("rate/<int:pk>/pairs/", pairwise_views.pair_rate, name="pair-rate"),
    path("rate/<int:pk>/pairs/next/", pairwise_views.pair_claim, name="pair-claim"),
    path("rate/<int:pk>/pairs/last/", pairwise_views.pair_revise, name="pair-revise"),
    path(
        "rate/<int:pk>/pairs/<str:public_id>/judge/",
        pairwise_views.pair_judge,
        name="pair-judge",
    ),
    path("rate/<int:pk>/pairs/<str:public_id>/skip/", pairwise_views.pair_skip, name="pair-skip"),
    path("rate/<int:pk>/pairs/<str:public_id>/flag/", pairwise_views.pair_flag, name="pair-flag"),
    # report, comparison and exports (evaluation/report/views.py)
    path(
        "studies/<int:pk>/report.html", report_views.report_download, name="study-report-download"
    ),
    path("studies/compare/", report_views.study_compare, name="study-compare"),
    # preference sets and snapshots (evaluation/report/preference_views.py)
    path("preferences/", preference_views.preference_index, name="preference-index"),
    path(
        "studies/<int:pk>/preferences/",
        preference_views.preference_build,
        name="study-preferences",
    ),
    path(
        "preferences/<int:pk>/",
        preference_views.preference_set_detail,
        name="preference-set-detail",
    ),
    path(
        "preferences/<int:pk>/freeze/",
        preference_views.preference_set_freeze,
        name="preference-set-freeze",
    ),
    path(
        "preferences/pairs/<int:pk>/drop/",
        preference_views.preference_pair_drop,
        name="preference-pair-drop",
    ),
    path(
        "preferences/pairs/<int:pk>/answer/",
        preference_views.preference_pair_answer,
        name="preference-pair-answer",
    ),
    path(
        "preferences/pairs/<int:pk>/answer/restore/",
        preference_views.preference_answer_restore,
        name="preference-answer-restore",
    ),
    path(
        "preference-snapshots/<int:pk>/",
        dpo_views.preference_snapshot_detail,
        name="preference-snapshot-detail",
    ),
    path(
        "preference-snapshots/<int:pk>/dpo/",
        dpo_views.preference_snapshot_dpo,
        name="preference-snapshot-dpo",
    ),
    path(
        "preference-snapshots/<int:pk>/download/",
        preference_views.preference_snapshot_download,
        name="preference-snapshot-download",
    ),
    path("studies/<int:pk>/exports/", report_views.export_list, name="study-exports"),
    path("exports/<int:pk>/download/", report_views.export_download, name="export-download"),
    path("exit-kits/", exit_kit_views.exit_kit_list, name="exit-kits"),
    path(
        "exit-kits/<int:pk>/download/", exit_kit_views.exit_kit_download, name="exit-kit-download"
    ),
]

# automatic scores (evaluation.scoring.views)
from evaluation.scoring import views as scoring_views  # noqa: E402

urlpatterns += [
    path("studies/<int:pk>/scoring/", scoring_views.scoring_page, name="study-scoring"),
    path("studies/<int:pk>/scoring/runs/", scoring_views.scoring_runs, name="study-scoring-runs"),
    path(
        "studies/<int:pk>/scoring/start/", scoring_views.scoring_start, name="study-scoring-start"
    ),
]

# emergent misalignment (evaluation.alignment.misalignment_views)
from evaluation.alignment import misalignment_views  # noqa: E402

urlpatterns += [
    path("misalignment/", misalignment_views.misalignment_list, name="misalignment-list"),
    path("misalignment/new/", misalignment_views.misalignment_create, name="misalignment-create"),
    path(
        "misalignment/<int:pk>/", misalignment_views.misalignment_detail, name="misalignment-detail"
    ),
    path(
        "misalignment/<int:pk>/persona/",
        misalignment_views.misalignment_persona,
        name="misalignment-persona",
    ),
    path(
        "misalignment/finetunes/<int:pk>/persona/",
        misalignment_views.misalignment_finetune_persona,
        name="misalignment-finetune-persona",
    ),
]

# re-alignment (evaluation.alignment.realignment_views)
from evaluation.alignment import realignment_views  # noqa: E402

urlpatterns += [
    path("realignment/", realignment_views.realignment_list, name="realignment-list"),
    path("realignment/new/", realignment_views.realignment_create, name="realignment-create"),
    path("realignment/<int:pk>/", realignment_views.realignment_detail, name="realignment-detail"),
    path(
        "realignment/<int:pk>/cancel/",
        realignment_views.realignment_cancel,
        name="realignment-cancel",
    ),
]

# the misalignment gate (evaluation.alignment.gate_views)
from evaluation.alignment import gate_views  # noqa: E402

urlpatterns += [
    path("gates/", gate_views.gate_list, name="gate-list"),
    path("gates/new/", gate_views.gate_create, name="gate-create"),
    path("gates/<int:pk>/", gate_views.gate_detail, name="gate-detail"),
]
