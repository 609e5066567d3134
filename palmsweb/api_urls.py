"""REST API routes, mounted under /api/ by palmsweb.urls."""

from django.urls import path, re_path
from rest_framework.routers import DefaultRouter

from curation import api as curation_api
from evaluation.alignment import gate_api, misalignment_api, realignment_api
from evaluation.report import exit_kit_views, preference_api
from evaluation.report import pairwise_api as pairwise_results_api
from evaluation.report.compare_api import StudyCompareView
from evaluation.scoring.api import StudyAdherenceView
from evaluation.studies import api as evaluation_api
from evaluation.studies import pairwise_api, prompt_set_api
from palmsweb.profile_api import ProfileViewSet
from palmsweb.tokens import AuthTokenView
from training import api as training_api
from training import sweep_api
from training.screening_api import ScreeningViewSet

router = DefaultRouter()
router.register("profiles", ProfileViewSet, basename="profile")
router.register("categories", curation_api.CategoryViewSet, basename="category")
router.register("datasets", curation_api.DatasetViewSet, basename="dataset")
router.register("samples", curation_api.SampleViewSet, basename="sample")
router.register("snapshots", curation_api.SnapshotViewSet, basename="snapshot")
router.register("gap-tickets", curation_api.GapTicketViewSet, basename="gapticket")
router.register("base-models", training_api.BaseModelViewSet, basename="basemodel")
router.register("model-versions", training_api.ModelVersionViewSet, basename="modelversion")
router.register("finetunes", training_api.FineTuneJobViewSet, basename="finetune")
router.register("sweeps", sweep_api.SweepViewSet, basename="sweep")
router.register("screenings", ScreeningViewSet, basename="screening")
router.register("sampling-jobs", training_api.SamplingJobViewSet, basename="samplingjob")
router.register("prompt-sets", prompt_set_api.PromptSetViewSet, basename="promptset")
router.register("studies", evaluation_api.StudyViewSet, basename="study")
router.register("study-outputs", evaluation_api.StudyOutputViewSet, basename="studyoutput")
router.register("rating/studies", evaluation_api.RatingStudyViewSet, basename="rating-study")
router.register("rating/outputs", evaluation_api.RatingOutputViewSet, basename="rating-output")
router.register("rating/pair-studies", pairwise_api.PairStudyViewSet, basename="pair-study")
router.register("rating/pairs", pairwise_api.PairViewSet, basename="rating-pair")
router.register("preference-sets", preference_api.PreferenceSetViewSet, basename="preferenceset")
router.register("preference-pairs", preference_api.PreferencePairViewSet, basename="preferencepair")
router.register(
    "preference-snapshots", preference_api.PreferenceSnapshotViewSet, basename="preferencesnapshot"
)
router.register(
    "pairwise-results", pairwise_results_api.PairwiseResultsViewSet, basename="pairwise-results"
)
router.register(
    "misalignment-evals", misalignment_api.MisalignmentEvalViewSet, basename="misalignmenteval"
)
router.register(
    "persona-measurements",
    misalignment_api.PersonaMeasurementViewSet,
    basename="personameasurement",
)

router.register(
    "realignment-runs", realignment_api.RealignmentRunViewSet, basename="realignmentrun"
)
router.register("model-gates", gate_api.ModelGateViewSet, basename="modelgate")

router.register("exit-kits", exit_kit_views.ExitKitViewSet, basename="exitkit")

urlpatterns = [
    path("auth/token/", AuthTokenView.as_view(), name="api-token"),
    # before the router, whose studies/{id}/ would take "compare" for an id
    path("studies/compare/", StudyCompareView.as_view(), name="study-compare"),
    re_path(
        r"^studies/(?P<id>[^/.]+)/adherence/$",
        StudyAdherenceView.as_view(),
        name="study-adherence",
    ),
    *router.urls,
]
