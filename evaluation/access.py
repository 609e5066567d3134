"""Who may read and change what in evaluation: one policy per object type.

Each object type has a ``get_<thing>_for_user(user, pk, *, write=False)`` for the HTML views
(the object, or 404; 403 when the policy refuses) and ``can_<verb>_<thing>(user, obj=None)``
predicates that the views and the API's DRF permission classes both call, so a page and its
endpoint can never disagree. Without ``obj`` a predicate answers for the kind of object (may
this user list or create them at all?), which is what DRF asks before it loads anything.

Admins pass every role check except rating (see :func:`palmsweb.roles.has_role`): a user who
can see which model wrote an output must not rate it.

Prompt sets and studies belong to a value profile (a study to its prompt set's): after the
role check, each helper checks the role again in the object's profile, with a 404 for a user
of another profile (:func:`palmsweb.profiles.check_object_profile`). Misalignment
evaluations and re-alignment runs are about model versions, which every profile shares, but
a re-alignment run trains on one profile's snapshot and conditional probes quote one: such
a run or evaluation belongs to that profile (:func:`misalignment_eval_profile_ids`).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404

from evaluation.models import (
    MisalignmentEval,
    ModelGate,
    PreferencePair,
    PreferenceSet,
    PreferenceSnapshot,
    Prompt,
    PromptSet,
    RealignmentRun,
    Study,
    StudyOutput,
)
from palmsweb.profiles import check_object_profile, require_current_profile
from palmsweb.roles import (
    Role,
    has_role,
    profile_ids_with_role,
    profiles_with_role,
    role_required,
    user_roles,
)

PROMPT_READ_ROLES = (Role.CURATOR, Role.RESEARCHER)
PROMPT_WRITE_ROLES = (Role.CURATOR,)  # admins pass every role check but rating
STUDY_READ_ROLES = (Role.RESEARCHER,)

# View decorators for pages whose whole audience is one role (anonymous → login, else 403);
# the get_<thing>_for_user helpers below then decide per object.
prompt_read_access = role_required(*PROMPT_READ_ROLES)
prompt_write_access = role_required(*PROMPT_WRITE_ROLES)
study_read_access = role_required(*STUDY_READ_ROLES)
admin_access = role_required(Role.ADMIN)


# --- prompt sets (and their prompts) ---------------------------------------------------------


def profile_for_request(request, roles: tuple[Role, ...]):
    """The request's active value profile, in which the user must hold one of ``roles``
    (403 otherwise): list pages show its rows, new rows go into it."""
    profile = require_current_profile(request)
    refusal = "Your role in this value profile does not allow this page."
    check_object_profile(request.user, profile.pk, roles, refusal)
    return profile


def _profile_of(prompt_set: PromptSet | None, profile):
    return prompt_set.profile_id if prompt_set is not None else profile


def can_read_prompt_set(user, prompt_set: PromptSet | None = None, profile=None) -> bool:
    """Curators, researchers and admins read the prompt sets of their profiles."""
    return has_role(user, *PROMPT_READ_ROLES, profile=_profile_of(prompt_set, profile))


def can_edit_prompt_set(user, prompt_set: PromptSet | None = None, profile=None) -> bool:
    """Curators and admins edit prompt sets (a locked set is copied on edit, not refused)."""
    return has_role(user, *PROMPT_WRITE_ROLES, profile=_profile_of(prompt_set, profile))


def _check_prompt_set_access(user, *, write: bool) -> None:
    allowed = can_edit_prompt_set(user) if write else can_read_prompt_set(user)
    if not allowed:
        raise PermissionDenied("Prompt sets are for curators, researchers and admins.")


def _check_prompt_set_profile(user, profile_id: int, *, write: bool) -> None:
    roles = PROMPT_WRITE_ROLES if write else PROMPT_READ_ROLES
    check_object_profile(user, profile_id, roles, "Prompt sets are for this profile's curators.")


def get_prompt_set_for_user(user, pk: int, *, write: bool = False) -> PromptSet:
    """The prompt set, or 404; 403 unless the user may read (or, with ``write``, edit) it."""
    _check_prompt_set_access(user, write=write)
    prompt_set = get_object_or_404(PromptSet, pk=pk)
    _check_prompt_set_profile(user, prompt_set.profile_id, write=write)
    return prompt_set


def copy_target_profiles(user, prompt_set: PromptSet):
    """The other value profiles ``user`` curates in: where they may copy ``prompt_set``."""
    others = profiles_with_role(user, *PROMPT_WRITE_ROLES).exclude(pk=prompt_set.profile_id)
    return others.order_by("name")


def get_prompt_for_user(user, pk: int, *, write: bool = False) -> Prompt:
    """The prompt with its set, or 404; 403 as for its set."""
    _check_prompt_set_access(user, write=write)
    prompt = get_object_or_404(Prompt.objects.select_related("prompt_set", "category"), pk=pk)
    _check_prompt_set_profile(user, prompt.prompt_set.profile_id, write=write)
    return prompt


# --- studies ---------------------------------------------------------------------------------


def can_read_study(user, study: Study | None = None) -> bool:
    """Researchers and admins follow studies (blinded until they may see arm results)."""
    return has_role(user, *STUDY_READ_ROLES)


def can_manage_study(user, study: Study | None = None) -> bool:
    """Admins create, edit, open, screen and close studies."""
    return has_role(user, Role.ADMIN)


def can_see_generations(user) -> bool:
    """Whether ``user`` can read a study's outputs with their models before it is
    unblinded (the sampling job, the outputs page, per-arm results): admins only. Such a
    user may not rate: they would know which model wrote what they rate."""
    return Role.ADMIN in user_roles(user)


def can_see_arm_results(user, study: Study) -> bool:
    """Admins always; researchers once the study is closed and unblinded; nobody else."""
    if has_role(user, Role.ADMIN):
        return True
    return study.is_unblinded and has_role(user, Role.RESEARCHER, profile=study.profile_id)


def can_unblind_study(user, study: Study) -> bool:
    """Researchers and admins unblind a study once it is closed (logged with who and when)."""
    return study.status == Study.Status.CLOSED and has_role(
        user, *STUDY_READ_ROLES, profile=study.profile_id
    )


def get_study_for_user(user, pk: int, *, write: bool = False) -> Study:
    """The study, or 404; 403 unless the user is a researcher or admin (``write``: admin)."""
    if not (can_manage_study(user) if write else can_read_study(user)):
        raise PermissionDenied("Study management is for admins and researchers.")
    studies = Study.objects.select_related("prompt_set__profile", "sampling_job")
    study = get_object_or_404(studies, pk=pk)
    check_study_profile(user, study)
    return study


def check_study_profile(user, study: Study) -> None:
    """404 for a user of another profile; 403 for a member who is not its researcher."""
    check_object_profile(
        user, study.profile_id, STUDY_READ_ROLES, "Studies are for this profile's researchers."
    )


# --- study outputs (unblinded data: admins screen them) --------------------------------------


def can_screen_output(user, output: StudyOutput | None = None) -> bool:
    """Admins only: an output shows its arm and model."""
    return has_role(user, Role.ADMIN)


def get_output_for_user(user, pk: int) -> StudyOutput:
    """An output with its arm and model, or 404; admins only (it is unblinded data)."""
    if not can_screen_output(user):
        raise PermissionDenied("Only admins screen outputs.")
    related = ("study__prompt_set", "arm__model_version", "prompt__category")
    return get_object_or_404(StudyOutput.objects.select_related(*related), pk=pk)


# --- rating ----------------------------------------------------------------------------------


def has_rater_role(user, profile=None) -> bool:
    """Raters (of ``profile``, or of any profile); admins too must be rater members."""
    return has_role(user, Role.RATER, profile=profile)


def can_rate_study(user, study: Study | None = None) -> bool:
    """Raters (in ``study``'s pool and a rater of its profile, when given). Admins in the
    pool are refused apart, with their own reason (:func:`can_see_generations`); the rating
    services check the study's state themselves."""
    if study is None:
        return has_rater_role(user)
    if not has_rater_role(user, study.profile_id):
        return False
    return study.raters.filter(pk=user.pk).exists()


def get_rating_study_for_user(user, pk: int) -> Study:
    """A study the user rates in, or 404; 403 unless they are a rater in its pool."""
    study = get_object_or_404(Study.objects.select_related("prompt_set"), pk=pk)
    if not can_see_generations(user) and not has_rater_role(user, study.profile_id):
        raise Http404("No such study.")  # another profile's study does not exist for them
    if not can_rate_study(user, study):
        raise PermissionDenied("You are not in this study's rater pool.")
    if can_see_generations(user):
        raise PermissionDenied("Admins can see which model wrote each output, so they cannot rate.")
    return study


# --- reports and exports ---------------------------------------------------------------------


def can_read_report(user, study: Study | None = None) -> bool:
    """Researchers and admins; what they see of a study depends on :func:`report_mode`."""
    return has_role(user, Role.RESEARCHER)


def report_mode(user, study: Study) -> str | None:
    """``"arms"`` (unblinded per-arm results), ``"blinded"`` (admins before unblinding:
    arms as letters), ``"arm-free"`` (researchers on a closed study not yet unblinded:
    agreement and progress only), or None when there is nothing for them yet."""
    if can_see_arm_results(user, study):
        return "arms" if study.is_unblinded else "blinded"
    if study.status == Study.Status.CLOSED:
        return "arm-free"
    return None


def get_report_study_for_user(user, pk: int) -> tuple[Study, str]:
    """The study and what the user may see of it (see :func:`report_mode`). 404 / 403
    otherwise."""
    if not can_read_report(user):
        raise PermissionDenied("Results are for researchers and admins.")
    # The profile: the report names it (methods, positions).
    studies = Study.objects.select_related("prompt_set__profile", "unblinded_by")
    study = get_object_or_404(studies, pk=pk)
    check_study_profile(user, study)
    mode = report_mode(user, study)
    if mode is None:
        raise PermissionDenied(
            "Per-arm results open to researchers once the study is closed and unblinded."
        )
    return study, mode


def comparable_studies(user):
    """The studies ``user`` may set side by side on the comparison (page and API): closed
    and unblinded (a comparison names the arms, so admins too wait for unblinding), in
    every profile they research in; two profiles' studies make the "same model, different
    values" comparison."""
    studies = Study.objects.filter(
        status=Study.Status.CLOSED,
        unblinded_at__isnull=False,
        prompt_set__profile__in=profile_ids_with_role(user, *STUDY_READ_ROLES),
    ).select_related("prompt_set__profile")
    return studies.order_by("-closed_at", "-pk")


def not_comparable(pk) -> str:
    """Why study ``pk`` cannot be compared: the same words for a study that does not exist,
    is not closed and unblinded, or is another profile's, so the answer tells nothing."""
    return f"There is no closed, unblinded study #{pk}: only those can be compared."


def can_export_study(user, study: Study | None = None) -> bool:
    """Researchers and admins export a study's ratings once it has left draft."""
    if not has_role(user, Role.RESEARCHER):
        return False
    return study is None or study.status != Study.Status.DRAFT


def get_export_study_for_user(user, pk: int) -> Study:
    """The study whose ratings ``user`` may export (researchers and admins), or 404/403."""
    if not can_export_study(user):
        raise PermissionDenied("Exports are for researchers and admins.")
    study = get_object_or_404(Study.objects.select_related("prompt_set"), pk=pk)
    check_study_profile(user, study)
    if not can_export_study(user, study):
        raise PermissionDenied("A draft study has nothing to export.")
    return study


# --- misalignment evaluations and re-alignment runs ------------------------------------------


ALIGNMENT_READ_ROLES = (Role.RESEARCHER,)
ALIGNMENT_REFUSAL = "Alignment checks on this profile's data are for its researchers."
# Where an evaluation's profiles come from: the snapshot its conditional probes quote, and
# the snapshot of the re-alignment run that made it.
EVAL_PROFILE_PATHS = (
    "conditional__snapshot__dataset__profile",
    "realignment__snapshot__dataset__profile",
)


def can_read_misalignment_eval(user, evaluation: MisalignmentEval | None = None) -> bool:
    """Researchers and admins read misalignment evaluations."""
    return has_role(user, *ALIGNMENT_READ_ROLES)


def can_launch_misalignment_eval(user, evaluation: MisalignmentEval | None = None) -> bool:
    """Admins launch misalignment evaluations (and resume their judging)."""
    return has_role(user, Role.ADMIN)


def misalignment_eval_profile_ids(evaluation: MisalignmentEval) -> list[int]:
    """The value profiles an evaluation belongs to (one query), in this order: its
    conditional probes' snapshot's, whose samples they quote, and its re-alignment run's.
    Empty: shared."""
    rows = MisalignmentEval.objects.filter(pk=evaluation.pk).values_list(*EVAL_PROFILE_PATHS)
    return list(dict.fromkeys(pk for row in rows for pk in row if pk is not None))


def readable_misalignment_evals(user, queryset: QuerySet) -> QuerySet:
    """The evaluations of ``queryset`` whose every profile is one where ``user``
    researches (all of them for admins); shared ones for every reader."""
    if has_role(user, Role.ADMIN):
        return queryset
    ids = profile_ids_with_role(user, *ALIGNMENT_READ_ROLES)
    for path in EVAL_PROFILE_PATHS:
        queryset = queryset.filter(Q(**{f"{path}__isnull": True}) | Q(**{f"{path}__in": ids}))
    return queryset


def get_misalignment_eval_for_user(user, pk: int, *, write: bool = False) -> MisalignmentEval:
    """The evaluation, or 404 (also for a user of another profile it belongs to); 403
    unless the user is a researcher or admin (``write``: admin)."""
    allowed = can_launch_misalignment_eval(user) if write else can_read_misalignment_eval(user)
    if not allowed:
        raise PermissionDenied("Misalignment evaluations are for researchers and admins.")
    evaluation = get_object_or_404(MisalignmentEval.objects.select_related("sampling_job"), pk=pk)
    _check_evaluation_profiles(user, evaluation)
    return evaluation


def _check_evaluation_profiles(user, evaluation: MisalignmentEval) -> None:
    """404 unless ``user`` reads in every profile ``evaluation`` belongs to."""
    for profile_id in misalignment_eval_profile_ids(evaluation):
        check_object_profile(user, profile_id, ALIGNMENT_READ_ROLES, ALIGNMENT_REFUSAL)


def can_read_realignment_run(user, run: RealignmentRun | None = None) -> bool:
    """Researchers and admins read re-alignment runs."""
    return has_role(user, *ALIGNMENT_READ_ROLES)


def can_launch_realignment_run(user, run: RealignmentRun | None = None) -> bool:
    """Admins start and cancel re-alignment runs."""
    return has_role(user, Role.ADMIN)


def readable_realignment_runs(user, queryset: QuerySet) -> QuerySet:
    """The runs of ``queryset`` on snapshots of profiles where ``user`` researches (all of
    them for admins)."""
    ids = profile_ids_with_role(user, *ALIGNMENT_READ_ROLES)
    return queryset.filter(snapshot__dataset__profile__in=ids)


def get_realignment_for_user(user, pk: int, *, write: bool = False) -> RealignmentRun:
    """The run, or 404 (also for a user of another profile than its snapshot's); 403 unless
    the user is a researcher or admin (``write``: admin)."""
    allowed = can_launch_realignment_run(user) if write else can_read_realignment_run(user)
    if not allowed:
        raise PermissionDenied("Re-alignment runs are for researchers and admins.")
    related = ("source_version", "snapshot__dataset", "finetune_job", "evaluation")
    run = get_object_or_404(RealignmentRun.objects.select_related(*related), pk=pk)
    check_object_profile(user, run.snapshot.profile_id, ALIGNMENT_READ_ROLES, ALIGNMENT_REFUSAL)
    return run


def readable_gates(user, queryset: QuerySet) -> QuerySet:
    """The gates of ``queryset`` whose evaluation ``user`` reads: a gate shows its
    evaluation's rates and counts, so it belongs where the evaluation does (a gate without
    one, or on a shared one, is shared). All of them for admins."""
    if has_role(user, Role.ADMIN):
        return queryset
    evaluations = readable_misalignment_evals(user, MisalignmentEval.objects.all())
    return queryset.filter(Q(evaluation__isnull=True) | Q(evaluation__in=evaluations))


def gates_seen_in_profile(profile_id: int, queryset: QuerySet) -> QuerySet:
    """The gates of ``queryset`` any member of profile ``profile_id`` may know of: shared
    ones and those on its own evaluations (what a study of that profile is warned about)."""
    evaluations = MisalignmentEval.objects.all()
    for path in EVAL_PROFILE_PATHS:
        evaluations = evaluations.filter(Q(**{f"{path}__isnull": True}) | Q(**{path: profile_id}))
    return queryset.filter(Q(evaluation__isnull=True) | Q(evaluation__in=evaluations))


def get_gate_for_user(user, pk: int) -> ModelGate:
    """The gate, or 404 (also for a user of another profile its evaluation belongs to); 403
    unless the user is a researcher or admin."""
    if not has_role(user, *ALIGNMENT_READ_ROLES):
        raise PermissionDenied("Misalignment gates are for researchers and admins.")
    related = ("model_version", "base_version", "evaluation")
    gate = get_object_or_404(ModelGate.objects.select_related(*related), pk=pk)
    if gate.evaluation is not None:
        _check_evaluation_profiles(user, gate.evaluation)
    return gate


def can_write_exit_kit(user) -> bool:
    """Admins write hosted exit kits: they hold every output and closed study's ratings."""
    return has_role(user, Role.ADMIN)


# --- preference sets and snapshots -----------------------------------------------------------

PREFERENCE_ROLES = (Role.CURATOR,)  # and admins: they pass every role check but rating
preference_access = role_required(*PREFERENCE_ROLES)


def can_build_preferences(user, study: Study) -> bool:
    """Curators (and admins) of the study's profile build preference sets from it."""
    return has_role(user, *PREFERENCE_ROLES, profile=study.profile_id)


def _check_preference_profile(user, profile_id: int) -> None:
    if not has_role(user, *PREFERENCE_ROLES):
        raise PermissionDenied("Preference sets are for curators and admins.")
    check_object_profile(
        user, profile_id, PREFERENCE_ROLES, "Preference sets are for this profile's curators."
    )


def get_preference_study_for_user(user, pk: int) -> Study:
    """A study curators may build preference sets from (its profile's curators), or 404/403."""
    study = get_object_or_404(Study.objects.select_related("prompt_set"), pk=pk)
    _check_preference_profile(user, study.profile_id)
    return study


def get_preference_set_for_user(user, pk: int) -> PreferenceSet:
    """A preference set with its study, or 404/403 as for its study."""
    rows = PreferenceSet.objects.select_related("study__prompt_set")
    preference_set = get_object_or_404(rows, pk=pk)
    _check_preference_profile(user, preference_set.study.profile_id)
    return preference_set


def get_preference_pair_for_user(user, pk: int) -> PreferencePair:
    rows = PreferencePair.objects.select_related("preference_set__study__prompt_set")
    pair = get_object_or_404(rows, pk=pk)
    _check_preference_profile(user, pair.preference_set.study.profile_id)
    return pair


def get_preference_snapshot_for_user(user, pk: int) -> PreferenceSnapshot:
    rows = PreferenceSnapshot.objects.select_related("preference_set__study__prompt_set")
    snapshot = get_object_or_404(rows, pk=pk)
    _check_preference_profile(user, snapshot.preference_set.study.profile_id)
    return snapshot
