"""DRF serializers for the evaluation API.

Two families, kept apart on purpose: the study-management serializers (admins, researchers)
show arms and models; the rater serializers (``Task*``, ``RaterStudy*``) are built field by
field from what a rater may see — prompt, category, position, rubric, output text, the
output's public id and progress — so a field added to a model can never leak through them.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from evaluation.models import (
    MAX_COMMENT_CHARS,
    MAX_PROMPT_CHARS,
    SCORES,
    PairJudgment,
    Prompt,
    PromptSet,
    Study,
    StudyArm,
    StudyEvent,
    StudyOutput,
)
from evaluation.studies.arm_keys import MAX_LABEL_CHARS
from evaluation.studies.blinding import rater_pseudonym
from evaluation.studies.lifecycle import MAX_SEED, ArmSpec
from evaluation.studies.position_serializers import (
    FrozenPositionSerializer,
    NewerPositionSerializer,
    ProfileRefSerializer,
    frozen_position_payload,
    newer_position_payload,
)
from evaluation.studies.positions import frozen_versions, position_text, task_position
from palmsweb.lib.drf import RejectUnknownFieldsMixin
from palmsweb.profiles import profile_choice_field
from palmsweb.roles import Role, has_role
from training.models import ModelVersion

# --- prompt sets ---------------------------------------------------------------------------


class PromptSerializer(serializers.ModelSerializer):
    category = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Prompt
        fields = ["id", "order", "category", "text"]


class PromptSetSerializer(serializers.ModelSerializer):
    prompts = PromptSerializer(many=True, read_only=True)
    is_locked = serializers.BooleanField(read_only=True)

    class Meta:
        model = PromptSet
        fields = [
            "id",
            "profile",
            "name",
            "description",
            "is_locked",
            "locked_at",
            "copied_from",
            "created_at",
            "prompts",
        ]


class PromptInputSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    category = serializers.CharField(
        max_length=120, help_text="The name of an active category of the set's profile."
    )
    text = serializers.CharField(max_length=MAX_PROMPT_CHARS)


class PromptSetCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    profile = profile_choice_field(
        (Role.CURATOR,),
        "Value profile id (optional when you curate in one profile only); the prompts' "
        "categories are that profile's.",
    )
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    prompts = PromptInputSerializer(many=True, required=False, default=list)


class PromptSetCopySerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    profile = profile_choice_field(
        (Role.CURATOR,),
        "Copy into this value profile (one you curate in); each prompt takes its category "
        "of the same name. Left out: the set's own profile.",
    )
    name = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default="",
        help_text="Left out: the set's own name (numbered if taken there).",
    )  # fmt: skip


# --- studies (admins, researchers) ---------------------------------------------------------


class StudyArmSerializer(serializers.ModelSerializer):
    # Null for non-admins until the study is unblinded (see StudySerializer).
    model_version = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    model_version_name = serializers.CharField(
        source="model_version.name", read_only=True, allow_null=True
    )

    class Meta:
        model = StudyArm
        fields = ["id", "arm", "label", "arm_override", "model_version", "model_version_name",
                  "size_tag"]  # fmt: skip


class ArmInputSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    arm = serializers.ChoiceField(
        choices=ModelVersion.Arm.choices,
        required=False,
        default="",
        help_text="Leave out: the arm the version's training data gives it. Another label "
        "needs allow_arm_mismatch.",
    )
    # Not a sweep's unpromoted candidates: only the promoted run of a sweep enters studies.
    model_version = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.for_studies())
    size_tag = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")
    label = serializers.CharField(
        max_length=MAX_LABEL_CHARS, required=False, allow_blank=True, default="",
        help_text="A free name beside the role, e.g. \"values-targeted + DPO\": tells two "
        "arms of one role and size apart (blank: the role's own name). Never shown to raters.",
    )  # fmt: skip
    allow_arm_mismatch = serializers.BooleanField(
        default=False,
        help_text="Confirm a label that differs from the version's training data; recorded "
        "on the study arm (arm_override). Without it such an arm is refused (400).",
    )


class ShutdownWarningSerializer(serializers.Serializer):
    shutdown_date = serializers.DateField()
    source = serializers.CharField(
        help_text='"provider": the provider\'s model listing; "configured": HOSTED_PROVIDER_DATES.'
    )
    days_left = serializers.IntegerField(help_text="Negative: it has shut down.")
    message = serializers.CharField()
    arm = serializers.CharField(allow_null=True, help_text="base, control or values_targeted.")
    size_tag = serializers.CharField(allow_null=True)
    model_version = serializers.IntegerField(allow_null=True)


class StudySerializer(serializers.ModelSerializer):
    """A study as admins and researchers read it. Until the study is unblinded, a
    non-admin gets no sampling job and no model versions (the job's outputs name their
    model, so either one would join outputs to arms), and raters appear as pseudonyms."""

    arms = StudyArmSerializer(many=True, read_only=True)
    raters = serializers.SerializerMethodField(
        help_text="Usernames for admins; for researchers, pseudonyms as in the exports."
    )
    progress = serializers.SerializerMethodField()
    arm_pairs = serializers.SerializerMethodField(
        help_text="Pairwise: the chosen arm pairs (arm numbers from 1); empty: every pair."
    )
    shutdown_warnings = serializers.SerializerMethodField(
        help_text="Arms whose hosted model shuts down on or before rating_closes_on (without "
        "one: within HOSTED_SHUTDOWN_WARNING_DAYS), or has, while the study is not closed; "
        "arm, size_tag and model_version are null for non-admins until it is unblinded."
    )
    profile = ProfileRefSerializer(source="prompt_set.profile", read_only=True)
    frozen_positions = serializers.SerializerMethodField(
        help_text="The position versions raters judge against, frozen when the study opened "
        "(empty for a draft)."
    )
    newer_position_versions = serializers.SerializerMethodField(
        help_text="Categories whose position was edited after the study froze it; its "
        "raters keep the frozen version."
    )

    class Meta:
        model = Study
        fields = [
            "id",
            "name",
            "description",
            "status",
            "mode",
            "arm_pairs",
            "prompt_set",
            "samples_per_prompt",
            "raters_per_output",
            "temperature",
            "top_p",
            "max_new_tokens",
            "seed",
            "lease_minutes",
            "rating_closes_on",
            "rubric",
            "arms",
            "raters",
            "sampling_job",
            "sampling_error",
            "created_at",
            "opened_at",
            "rating_opened_at",
            "closed_at",
            "unblinded_at",
            "progress",
            "shutdown_warnings",
            "profile",
            "frozen_positions",
            "newer_position_versions",
        ]

    def _user(self):
        request = self.context.get("request")
        return request.user if request is not None else None

    def _is_admin(self) -> bool:
        user = self._user()
        return user is not None and has_role(user, Role.ADMIN)

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_raters(self, study: Study) -> list[str]:
        raters = list(study.raters.all())
        if self._is_admin():
            return [rater.get_username() for rater in raters]
        return sorted(rater_pseudonym(study, rater.pk) for rater in raters)

    def to_representation(self, study: Study) -> dict:
        data = super().to_representation(study)
        if not (self._is_admin() or study.is_unblinded):
            data["sampling_job"] = None
            for arm in data["arms"]:
                arm["model_version"] = arm["model_version_name"] = None
        return data

    @extend_schema_field(ShutdownWarningSerializer(many=True))
    def get_shutdown_warnings(self, study: Study) -> list[dict]:
        from evaluation.studies.selectors import shutdown_warnings

        reveal = self._is_admin() or study.is_unblinded
        return [
            ShutdownWarningSerializer(warning).data
            for warning in shutdown_warnings(study, reveal_models=reveal, arms=study.arms.all())
        ]

    @extend_schema_field(FrozenPositionSerializer(many=True))
    def get_frozen_positions(self, study: Study) -> list[dict]:
        return frozen_position_payload(study, self._frozen(study))

    @extend_schema_field(NewerPositionSerializer(many=True))
    def get_newer_position_versions(self, study: Study) -> list[dict]:
        return newer_position_payload(study, self._frozen(study))

    def _frozen(self, study: Study) -> list:
        """The study's frozen position versions, read once for the two fields above."""
        read = self.__dict__.setdefault("_frozen_versions", {})
        if study.pk not in read:
            read[study.pk] = frozen_versions(study)
        return read[study.pk]

    def get_arm_pairs(self, study: Study) -> list[list[int]]:
        from evaluation.studies.arm_pairs import compared_numbers

        return [list(pair) for pair in compared_numbers(study)]

    def get_progress(self, study: Study) -> dict:
        from evaluation.studies.selectors import study_progress

        p = study_progress(study)
        return {
            "outputs": p.outputs,
            "active": p.active,
            "held": p.held,
            "excluded": p.excluded,
            "needed": p.needed,
            "completed": p.completed,
            "live_claims": p.live_claims,
            "percent": p.percent,
        }


class StudyWriteSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    prompt_set = serializers.PrimaryKeyRelatedField(queryset=PromptSet.objects.all())
    arms = ArmInputSerializer(many=True)
    raters = serializers.SlugRelatedField(
        slug_field="username",
        many=True,
        queryset=get_user_model().objects.all(),
        required=False,
        default=list,
    )
    mode = serializers.ChoiceField(
        choices=Study.Mode.choices,
        default=Study.Mode.SCALE,
        help_text="scale: 1–5 ratings of each output; pairwise: A/B judgments of arm pairs.",
    )
    arm_pairs = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=2),
        required=False,
        default=list,
        help_text="Pairwise only: the arm pairs raters compare, as arm numbers from 1 in the "
        "order of `arms`, e.g. [[1, 2], [1, 3]]. Empty: every pair.",
    )
    samples_per_prompt = serializers.IntegerField(default=3)
    raters_per_output = serializers.IntegerField(default=3)
    temperature = serializers.FloatField(default=0.7)
    top_p = serializers.FloatField(default=0.9)
    max_new_tokens = serializers.IntegerField(default=200)
    seed = serializers.IntegerField(default=0, min_value=0, max_value=MAX_SEED)
    lease_minutes = serializers.IntegerField(default=10)
    rating_closes_on = serializers.DateField(
        required=False, allow_null=True, default=None,
        help_text="When rating is planned to close (YYYY-MM-DD, today or later); the study "
        "warns when an arm's hosted model shuts down before it. Null: no date.",
    )  # fmt: skip
    rubric = serializers.ListField(
        child=serializers.CharField(max_length=MAX_COMMENT_CHARS),
        min_length=len(SCORES),
        max_length=len(SCORES),
        required=False,
    )

    def service_kwargs(self) -> dict:
        data = dict(self.validated_data)
        data["arms"] = [ArmSpec(**arm) for arm in data["arms"]]
        return data


class LiveStudySerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """What may change once a study is open."""

    rubric = serializers.ListField(
        child=serializers.CharField(max_length=MAX_COMMENT_CHARS),
        min_length=len(SCORES),
        max_length=len(SCORES),
    )
    raters = serializers.SlugRelatedField(
        slug_field="username", many=True, queryset=get_user_model().objects.all()
    )
    rating_closes_on = serializers.DateField(
        required=False, allow_null=True,
        help_text="When rating is planned to close (today or later; null: none). Left out: kept.",
    )  # fmt: skip


class StudyOutputSerializer(serializers.ModelSerializer):
    """Admins only: an output with the arm and model that wrote it."""

    arm = serializers.CharField(source="arm.arm", read_only=True)
    size_tag = serializers.CharField(source="arm.size_tag", read_only=True)
    arm_label = serializers.CharField(source="arm.label", read_only=True)
    model_version = serializers.CharField(source="arm.model_version.name", read_only=True)
    prompt = serializers.CharField(source="prompt.text", read_only=True)
    category = serializers.CharField(source="prompt.category.name", read_only=True)

    class Meta:
        model = StudyOutput
        fields = [
            "id",
            "public_id",
            "study",
            "arm",
            "arm_label",
            "size_tag",
            "model_version",
            "category",
            "prompt",
            "sample_index",
            "text",
            "screening",
            "flag_reasons",
            "completed_count",
            "quota",
        ]


class ExcludeSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_COMMENT_CHARS
    )


class StudyEventSerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = StudyEvent
        fields = ["kind", "actor", "at", "detail"]


class ResultCellSerializer(serializers.Serializer):
    category = serializers.CharField()
    ratings = serializers.IntegerField()
    mean = serializers.FloatField(allow_null=True)


class ArmResultSerializer(serializers.Serializer):
    arm = serializers.CharField()
    label = serializers.CharField(allow_blank=True)
    model_version = serializers.CharField()
    size_tag = serializers.CharField()
    overall = serializers.FloatField(allow_null=True)
    categories = ResultCellSerializer(many=True)


def results_payload(results: dict) -> list[dict]:
    return [
        {
            "arm": row["arm"].arm,
            "label": row["arm"].label,
            "model_version": row["arm"].model_version.name,
            "size_tag": row["arm"].size_tag,
            "overall": row["overall"],
            "categories": row["cells"],
        }
        for row in results["rows"]
    ]


# --- raters: only what a rater may see -------------------------------------------------------


class ProgressSerializer(serializers.Serializer):
    completed = serializers.IntegerField()
    needed = serializers.IntegerField()
    percent = serializers.IntegerField()


class RaterProgressSerializer(serializers.Serializer):
    completed = serializers.IntegerField()
    skipped = serializers.IntegerField()
    share = serializers.IntegerField(help_text="A fair share of the study's ratings per rater.")
    open_to_me = serializers.IntegerField(
        help_text="Outputs still needing ratings that you have not answered (your current "
        "claim included): at most this many more for you."
    )


class RaterStudySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    my_progress = RaterProgressSerializer()
    study_progress = ProgressSerializer()


class RubricItemSerializer(serializers.Serializer):
    score = serializers.IntegerField()
    anchor = serializers.CharField()


class TaskSerializer(serializers.Serializer):
    """One output as a rater sees it. ``output`` is the opaque public id."""

    output = serializers.CharField()
    study = serializers.IntegerField()
    category = serializers.CharField()
    position = serializers.CharField()
    prompt = serializers.CharField()
    text = serializers.CharField()
    rubric = RubricItemSerializer(many=True)
    expires_at = serializers.DateTimeField()


class LastRatingSerializer(TaskSerializer):
    """Your last submitted rating, which you may change while the study is open."""

    expires_at = None
    score = serializers.IntegerField()
    comment = serializers.CharField(allow_blank=True)
    completed_at = serializers.DateTimeField()
    revisions = serializers.IntegerField(help_text="How often you changed it already.")


def last_rating_payload(rating) -> dict:
    payload = task_payload(rating)
    del payload["expires_at"]
    return payload | {
        "score": rating.score,
        "comment": rating.comment,
        "completed_at": rating.completed_at,
        "revisions": rating.revisions.count(),
    }


def task_payload(rating) -> dict:
    output = rating.output
    category = output.prompt.category
    return {
        "output": output.public_id,
        "study": rating.study_id,
        "category": category.name,
        # The version frozen when the study opened, not the live text.
        "position": task_position(rating.study, output),
        "prompt": output.prompt.text,
        "text": output.text,
        "rubric": [{"score": s, "anchor": a} for s, a in rating.study.rubric_items()],
        "expires_at": rating.expires_at,
    }


class SubmitSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    score = serializers.ChoiceField(choices=SCORES)
    comment = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_COMMENT_CHARS
    )


class FlagSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_COMMENT_CHARS
    )


class RatingResultSerializer(serializers.Serializer):
    """The outcome of submit/skip/flag: no ids beyond the public one."""

    output = serializers.CharField()
    status = serializers.CharField()
    score = serializers.IntegerField(allow_null=True)


class PairTaskSerializer(serializers.Serializer):
    """One pair as a rater sees it: ``pair`` is the opaque public id, ``a`` and ``b`` the
    two texts in the pair's stored order. Nothing maps to an arm, model or size."""

    pair = serializers.CharField()
    study = serializers.IntegerField()
    category = serializers.CharField()
    position = serializers.CharField()
    prompt = serializers.CharField()
    a = serializers.CharField()
    b = serializers.CharField()
    expires_at = serializers.DateTimeField()


def pair_task_payload(judgment) -> dict:
    pair = judgment.pair
    return {
        "pair": pair.public_id,
        "study": judgment.study_id,
        "category": pair.prompt.category.name,
        # The version frozen when the study opened, not the live text.
        "position": position_text(judgment.study, pair.prompt.category),
        "prompt": pair.prompt.text,
        "a": pair.left.text,
        "b": pair.right.text,
        "expires_at": judgment.expires_at,
    }


class LastJudgmentSerializer(PairTaskSerializer):
    """Your last submitted judgment, which you may change while the study is open."""

    expires_at = None
    verdict = serializers.ChoiceField(choices=PairJudgment.Verdict.choices)
    reason = serializers.CharField(allow_blank=True)
    completed_at = serializers.DateTimeField()
    revisions = serializers.IntegerField(help_text="How often you changed it already.")


def last_judgment_payload(judgment) -> dict:
    payload = pair_task_payload(judgment)
    del payload["expires_at"]
    return payload | {
        "verdict": judgment.verdict,
        "reason": judgment.reason,
        "completed_at": judgment.completed_at,
        "revisions": judgment.revisions.count(),
    }


class PairJudgeSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    verdict = serializers.ChoiceField(
        choices=PairJudgment.Verdict.choices,
        help_text="a: A better; b: B better; tie; both_bad.",
    )
    reason = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_COMMENT_CHARS
    )


class PairResultSerializer(serializers.Serializer):
    """The outcome of judge/skip/flag: no ids beyond the pair's public one."""

    pair = serializers.CharField()
    status = serializers.CharField()
    verdict = serializers.CharField(allow_blank=True)
