"""Evaluation: prompt sets, blinded rating studies, their outputs, ratings and audit events.

The rules the database enforces itself (so no code path can break them):

- a rater rates an output at most once: ``UniqueConstraint(output, rater)``;
- an output never has more completed ratings than its quota: ``completed_count <= quota``,
  a counter updated in the same transaction as the rating;
- a rater holds at most one open claim per study;
- a completed rating has a score from 1 to 5, anything else has none.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from evaluation import choices
from evaluation.background import BackgroundRun
from evaluation.identifiers import new_order_salt, new_public_id  # noqa: F401 (migrations)
from evaluation.rubric import default_rubric
from palmsweb.models import default_profile_pk
from training.models import ModelVersion

SCORES = (1, 2, 3, 4, 5)
MAX_PROMPT_CHARS = 4_000
MAX_COMMENT_CHARS = 2_000


class PromptSet(models.Model):
    """An ordered list of evaluation prompts. Locked once a study uses it: edits to a
    locked set go into a copy, so a study's prompts never change under it."""

    profile = models.ForeignKey(
        "palmsweb.Profile", on_delete=models.PROTECT, related_name="prompt_sets",
        default=default_profile_pk,
    )  # fmt: skip
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    copied_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="copies"
    )
    locked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["profile", "name"], name="prompt_set_name_per_profile")
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("evaluation:prompt-set-detail", args=[self.pk])

    @property
    def is_locked(self) -> bool:
        return self.locked_at is not None


class Prompt(models.Model):
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="prompts")
    order = models.PositiveIntegerField(default=0)
    category = models.ForeignKey(
        "curation.Category", on_delete=models.PROTECT, related_name="eval_prompts"
    )
    text = models.TextField()

    class Meta:
        ordering = ["order", "pk"]

    def __str__(self) -> str:
        return self.text[:80]


class Study(models.Model):
    Status = choices.StudyStatus
    Mode = choices.StudyMode

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.PROTECT, related_name="studies")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    mode = models.CharField(max_length=20, choices=Mode.choices, default=Mode.SCALE)
    samples_per_prompt = models.PositiveSmallIntegerField(default=3)
    raters_per_output = models.PositiveSmallIntegerField(default=3)
    temperature = models.FloatField(default=0.7)
    top_p = models.FloatField(default=0.9)
    max_new_tokens = models.PositiveIntegerField(default=200)
    seed = models.BigIntegerField(default=0)
    lease_minutes = models.PositiveSmallIntegerField(
        default=10, help_text="A claimed output returns to the pool after this long."
    )
    rubric = models.JSONField(
        default=default_rubric, help_text="Five anchor texts; the first is score 1."
    )
    raters = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="rating_studies"
    )
    # Fixed at opening: prompt_index i of the sampling job is Prompt prompt_ids[i].
    prompt_ids = models.JSONField(default=list, blank=True)
    # Fixed at opening: the position version of each category its prompts belong to. Raters,
    # the report and the exports read these, never the live text a curator may edit.
    position_versions = models.ManyToManyField(
        "curation.PositionVersion", blank=True, related_name="+"
    )
    sampling_job = models.ForeignKey(
        "training.SamplingJob",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    sampling_error = models.TextField(blank=True)
    # Salts the per-rater presentation order; server-side only.
    order_salt = models.CharField(max_length=32, default=new_order_salt, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    rating_opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # When rating is planned to close: the shutdown warning compares arms' models with it.
    rating_closes_on = models.DateField(null=True, blank=True)
    unblinded_at = models.DateTimeField(null=True, blank=True)
    unblinded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "studies"
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    samples_per_prompt__gte=1, raters_per_output__gte=1, lease_minutes__gte=1
                ),
                name="study_counts_positive",
            ),
            models.CheckConstraint(
                condition=Q(unblinded_at__isnull=True) | Q(status="closed"),
                name="study_unblinded_only_when_closed",
            ),
        ]

    @property
    def profile_id(self) -> int:
        """A study is in its prompt set's value profile (categories, positions, raters)."""
        return self.prompt_set.profile_id

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("evaluation:study-detail", args=[self.pk])

    @property
    def is_unblinded(self) -> bool:
        return self.unblinded_at is not None

    def rubric_items(self) -> list[tuple[int, str]]:
        return list(zip(SCORES, self.rubric, strict=False))


class StudyArm(models.Model):
    """One model in a study: its role (``arm``), the version sampled, a size tag and an
    optional free label that tells two arms of one role apart (evaluation.studies.arm_keys)."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="arms")
    arm = models.CharField(max_length=20, choices=ModelVersion.Arm.choices)
    label = models.CharField(max_length=60, blank=True)  # blank: the role's own name
    model_version = models.ForeignKey(
        "training.ModelVersion", on_delete=models.PROTECT, related_name="+"
    )
    size_tag = models.CharField(max_length=40, blank=True)
    order = models.PositiveSmallIntegerField(default=0)
    arm_override = models.BooleanField(
        default=False,
        help_text="The label differs from the arm the model's training data gives it, "
        "confirmed explicitly.",
    )

    class Meta:
        ordering = ["order", "pk"]
        constraints = [models.UniqueConstraint(fields=["study", "model_version"],
                                               name="study_arm_unique_version")]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.label or self.get_arm_display()} · {self.size_tag}"


class StudyOutputQuerySet(models.QuerySet):
    def in_pool(self):
        return self.filter(screening=StudyOutput.Screening.ACTIVE)

    def rated(self):
        """Outputs whose ratings count: everything not excluded by an admin."""
        return self.exclude(screening=StudyOutput.Screening.EXCLUDED)


class StudyOutput(models.Model):
    """One sampled output as raters meet it. Only ``public_id`` ever leaves for a rater."""

    Screening = choices.OutputScreening

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="outputs")
    arm = models.ForeignKey(StudyArm, on_delete=models.PROTECT, related_name="outputs")
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="outputs")
    sample_index = models.PositiveSmallIntegerField()
    generation = models.OneToOneField(
        "training.Generation",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    text = models.TextField()
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id)
    screening = models.CharField(max_length=20, choices=Screening.choices, default=Screening.ACTIVE)
    flag_reasons = models.TextField(blank=True)
    quota = models.PositiveSmallIntegerField()
    completed_count = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    objects = StudyOutputQuerySet.as_manager()

    class Meta:
        ordering = ["prompt_id", "arm_id", "sample_index"]
        constraints = [
            models.CheckConstraint(
                condition=Q(completed_count__lte=F("quota")), name="output_completed_within_quota"
            ),
            models.UniqueConstraint(
                fields=["study", "arm", "prompt", "sample_index"], name="output_unique_slot"
            ),
        ]
        indexes = [models.Index(fields=["study", "screening", "completed_count"])]

    def __str__(self) -> str:
        return self.public_id

    @property
    def is_full(self) -> bool:
        return self.completed_count >= self.quota


class Rating(models.Model):
    """A rater's claim on an output, then its outcome. One row per (output, rater), ever:
    that is what makes "never the same output twice" a database rule."""

    Status = choices.RatingStatus

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="ratings")
    output = models.ForeignKey(StudyOutput, on_delete=models.CASCADE, related_name="ratings")
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ratings"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CLAIMED)
    score = models.PositiveSmallIntegerField(null=True, blank=True)
    comment = models.TextField(blank=True)
    flag_reason = models.TextField(blank=True)
    claimed_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["claimed_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["output", "rater"], name="rating_one_per_rater"),
            models.UniqueConstraint(
                fields=["study", "rater"],
                condition=Q(status="claimed"),
                name="rating_one_open_claim_per_study",
            ),
            models.CheckConstraint(
                condition=(
                    Q(status="completed", score__gte=1, score__lte=5)
                    | (~Q(status="completed") & Q(score__isnull=True))
                ),
                name="rating_score_iff_completed",
            ),
        ]
        indexes = [
            models.Index(fields=["output", "status", "expires_at"]),
            models.Index(fields=["study", "rater", "status"]),
        ]

    def __str__(self) -> str:
        return f"{self.output.public_id} · {self.rater_id} · {self.status}"

    def is_live(self, now) -> bool:
        return self.status == self.Status.CLAIMED and self.expires_at > now


class RatingRevision(models.Model):
    """A rater changed a rating they had submitted (their last one, while the study was
    open). The rating row holds the current score; this log keeps what it replaced."""

    rating = models.ForeignKey(Rating, on_delete=models.CASCADE, related_name="revisions")
    previous_score = models.PositiveSmallIntegerField()
    previous_comment = models.TextField(blank=True)
    score = models.PositiveSmallIntegerField()
    comment = models.TextField(blank=True)
    revised_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["revised_at", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(previous_score__gte=1, previous_score__lte=5, score__gte=1,
                            score__lte=5),  # fmt: skip
                name="rating_revision_scores_1_to_5",
            )
        ]

    def __str__(self) -> str:
        return f"{self.rating_id}: {self.previous_score} → {self.score}"


class StudyEvent(models.Model):
    """The audit log of a study: who opened, screened, closed and unblinded it, and when."""

    Kind = choices.StudyEventKind

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=30, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    at = models.DateTimeField(default=timezone.now)
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} · {self.at:%Y-%m-%d %H:%M}"


class AutomaticScore(models.Model):
    """A machine score of one output (toxicity for now). ``value`` None means the scorer
    gave no score — never stored as 0, which would read as "not toxic"."""

    output = models.ForeignKey(StudyOutput, on_delete=models.CASCADE, related_name="auto_scores")
    metric = models.CharField(max_length=40, default="toxicity")
    scorer = models.CharField(max_length=80)
    scorer_version = models.CharField(max_length=200)
    value = models.FloatField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["output", "metric", "scorer"], name="one_score_per_output_metric_scorer"
            )
        ]

    def __str__(self) -> str:
        return f"{self.metric}={self.value} ({self.scorer})"


class ScoringRun(BackgroundRun):
    """A background computation over a study: toxicity, co-occurrence, capability, held-out
    adherence or the LLM judge. Per-output results: AutomaticScore; per arm: ``result``."""

    Kind = choices.ScoringKind
    Status = choices.RunStatus

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="scoring_runs")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    scorer = models.CharField(max_length=80, blank=True)
    options = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    compute = models.JSONField(default=dict, blank=True)  # scoring/compute.py; {} until it ends

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.study}"


class Export(BackgroundRun):
    """A file written in the background (ratings CSV/JSONL/Parquet or a study bundle)."""

    Format = choices.ExportFormat
    Status = choices.RunStatus

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="exports")
    format = models.CharField(max_length=20, choices=Format.choices)
    # Arms and model versions appear only in exports made after unblinding.
    includes_arms = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    path = models.CharField(max_length=500, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    row_count = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.get_format_display()} export of {self.study}"


# --- emergent misalignment (evaluation.alignment.misalignment) ------------------------------------


class MisalignmentEval(BackgroundRun):
    """Open-ended probes × model versions × n samples, scored by an LLM judge.

    The judge's endpoint, model and the *name* of the environment variable holding its key
    are stored; the key itself never is. Thresholds are stored with the results they made.
    """

    Status = choices.MisalignmentStatus

    name = models.CharField(max_length=200)
    probes = models.JSONField(help_text="The probe questions, in order.")
    model_versions = models.ManyToManyField(ModelVersion, related_name="misalignment_evals")
    n_samples = models.PositiveIntegerField(default=5)
    temperature = models.FloatField(default=1.0)
    top_p = models.FloatField(default=1.0)
    max_new_tokens = models.PositiveIntegerField(default=200)
    seed = models.BigIntegerField(default=0)
    judge_base_url = models.URLField()
    judge_model = models.CharField(max_length=200)
    judge_key_env = models.CharField(max_length=100, default="OPENAI_API_KEY")
    judge_logprobs = models.BooleanField(default=True)
    coherence_min = models.FloatField(default=50)
    misaligned_below = models.FloatField(default=30)
    measure_persona = models.BooleanField(default=True)
    sampling_job = models.ForeignKey(
        "training.SamplingJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    # Written with progress while judging; a stale one means the judging worker died.
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("evaluation:misalignment-detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.status in {self.Status.QUEUED, self.Status.SAMPLING, self.Status.JUDGING}


class MisalignmentAnswer(models.Model):
    """One sampled answer to one probe and the judge's verdict on it."""

    Verdict = choices.MisalignmentVerdict

    evaluation = models.ForeignKey(
        MisalignmentEval, on_delete=models.CASCADE, related_name="answers"
    )
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    probe_index = models.PositiveIntegerField()
    sample_index = models.PositiveIntegerField()
    question = models.TextField()
    answer = models.TextField()
    alignment = models.FloatField(null=True, blank=True)
    coherence = models.FloatField(null=True, blank=True)
    refusal = models.BooleanField(default=False)
    verdict = models.CharField(max_length=20, choices=Verdict.choices)
    raw = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["model_version_id", "probe_index", "sample_index"]
        constraints = [
            models.UniqueConstraint(
                fields=["evaluation", "model_version", "probe_index", "sample_index"],
                name="one_judged_answer_per_slot",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_verdict_display()} answer to probe {self.probe_index}"


class PersonaMeasurement(models.Model):
    """A model version's mean projection on the misaligned-persona direction.

    The direction is computed on the version's base model from the shipped contrastive
    texts; ``base_value`` is the base model's own projection on the same prompts, so
    ``value - base_value`` is the shift a fine-tune caused.
    """

    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="persona_measurements"
    )
    evaluation = models.ForeignKey(
        MisalignmentEval,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="persona_measurements",
    )
    label = models.CharField(max_length=200, blank=True)
    layer = models.PositiveIntegerField()
    value = models.FloatField()
    base_value = models.FloatField()
    n_prompts = models.PositiveIntegerField()
    direction = models.JSONField(default=dict, blank=True, help_text="How it was computed.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.label}: {self.value:.4f} (base {self.base_value:.4f})"

    @property
    def shift(self) -> float:
        return self.value - self.base_value


class RealignmentRun(BackgroundRun):
    """Continue a model version on a benign snapshot for ``steps`` optimizer steps, saving a
    version at each of ``eval_steps``, then measure every saved version: the persona
    projection (local models) and, when ``judge`` is set, the misalignment rate.

    queued → training (its fine-tune job) → evaluating (its misalignment evaluation and
    persona measurements) → succeeded; or failed / cancelled.
    """

    Status = choices.RealignmentStatus

    name = models.CharField(max_length=200)
    source_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="realignments"
    )
    snapshot = models.ForeignKey(
        "curation.Snapshot", on_delete=models.PROTECT, related_name="realignments"
    )
    steps = models.PositiveIntegerField(help_text="Optimizer steps in all.")
    eval_steps = models.JSONField(help_text="Steps at which a version is saved and measured.")
    hyperparameters = models.JSONField(default=dict, blank=True)
    probes = models.JSONField(help_text="The probe questions, in order.")
    # misalignment_eval_create's judge settings; empty: persona projection only.
    judge = models.JSONField(default=dict, blank=True)
    finetune_job = models.OneToOneField(
        "training.FineTuneJob", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="realignment",
    )  # fmt: skip
    evaluation = models.OneToOneField(
        MisalignmentEval, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="realignment",
    )  # fmt: skip
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    # {"points": [{"step", "model_version_id", "persona": {...}, "misalignment": {...}}]}
    result = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("evaluation:realignment-detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.status in {self.Status.QUEUED, self.Status.TRAINING, self.Status.EVALUATING}


from evaluation.exit_kit_models import ExitKitRun  # noqa: E402, F401
from evaluation.gate_models import ConditionalProbeSet, ModelGate  # noqa: E402, F401
from evaluation.pairwise_models import *  # noqa: E402, F403 (one app: pairwise rating)
from evaluation.preference_models import *  # noqa: E402, F403 (one app: preference sets)
