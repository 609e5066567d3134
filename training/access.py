"""Who may see and change training objects: one policy, used by the HTML views and the API.

Curators and researchers read base models, model versions, fine-tunes and sampling jobs;
admins also register, launch, cancel and retry; everyone else gets 403. Fine-tunes and sweeps
belong to their snapshot's value profile; a sampling job belongs to the profile recorded on it
when it samples a profile's prompts (a study's, a co-occurrence run's, probes made from a
snapshot): members of other profiles get 404. A sampling job without a profile is shared, like
model versions. A restricted sampling job (a blinded study's: its outputs name their models) is
for admins only until the study is unblinded. The ``get_<thing>_for_user`` helpers return the
object or raise 404/403; the DRF permission class in ``training/api.py`` asks
:func:`check_access` the same questions.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import Model, Q, QuerySet
from django.shortcuts import get_object_or_404

from palmsweb.profiles import check_object_profile
from palmsweb.roles import Role, has_role, profile_ids_with_role
from training.models import BaseModel, FineTuneJob, ModelVersion, SamplingJob, ScreeningRun, Sweep

READ_ROLES = (Role.CURATOR, Role.RESEARCHER)  # admins pass every role check
WRITE_ROLES = (Role.ADMIN,)
READ_DENIED = "Training data is open to curators, researchers and admins."
WRITE_DENIED = "Only admins may register models or launch and change jobs."
RESTRICTED_JOB_MESSAGE = (
    "This sampling job belongs to a blinded study: only admins see it and its outputs until "
    "the study is unblinded."
)


def can_read(user) -> bool:
    return has_role(user, *READ_ROLES)


def can_write(user) -> bool:
    return has_role(user, *WRITE_ROLES)


def check_access(user, obj: Model | None = None, *, write: bool = False) -> None:
    """Raise PermissionDenied (with the reason) unless ``user`` may read, or with ``write``
    change, training objects in general and ``obj`` in particular."""
    if not (can_write(user) if write else can_read(user)):
        raise PermissionDenied(WRITE_DENIED if write else READ_DENIED)
    if isinstance(obj, SamplingJob):
        _check_sampling_job(user, obj, write=write)
    if isinstance(obj, FineTuneJob | Sweep):
        # A job trained on a snapshot names its dataset and samples: it belongs to the
        # snapshot's value profile, like the snapshot itself (404 for other profiles).
        roles = WRITE_ROLES if write else READ_ROLES
        owner = obj.profile_id if isinstance(obj, FineTuneJob) else obj.snapshot.dataset.profile_id
        check_object_profile(user, owner, roles, READ_DENIED)


def _check_sampling_job(user, job: SamplingJob, *, write: bool) -> None:
    # The profile first: another profile's job is 404 even while restricted, so a 403
    # never confirms that it exists.
    if job.profile_id is not None:
        roles = WRITE_ROLES if write else READ_ROLES
        check_object_profile(user, job.profile_id, roles, READ_DENIED)
    if job.restricted and not can_write(user):
        raise PermissionDenied(RESTRICTED_JOB_MESSAGE)


def in_readable_profiles(user, queryset: QuerySet) -> QuerySet:
    """Fine-tunes, sweeps or sampling jobs of the value profiles where ``user`` may read
    training data (every profile for admins): what their list pages and API lists show. A
    DPO job has no snapshot: its profile is its preference pairs'. Sampling jobs without a
    profile are everyone's, restricted ones admins' only."""
    if queryset.model is SamplingJob and can_write(user):
        return queryset
    ids = profile_ids_with_role(user, *READ_ROLES)
    if queryset.model is SamplingJob:
        return queryset.filter(Q(profile=None) | Q(profile__in=ids), restricted=False)
    in_snapshot_profile = Q(snapshot__dataset__profile__in=ids)
    if queryset.model is FineTuneJob:
        return queryset.filter(in_snapshot_profile | Q(preference_profile__in=ids))
    return queryset.filter(in_snapshot_profile)


def _get_for_user(user, queryset: QuerySet, pk: int, *, write: bool):
    # The role is checked before the lookup, so someone without access learns nothing
    # about which ids exist.
    check_access(user, write=write)
    obj = get_object_or_404(queryset, pk=pk)
    check_access(user, obj, write=write)
    return obj


def get_base_model_for_user(user, pk: int, *, write: bool = False) -> BaseModel:
    """The base model, or 404; 403 unless the user may read (or, with ``write``, change) it."""
    return _get_for_user(user, BaseModel.objects.all(), pk, write=write)


def get_model_version_for_user(user, pk: int, *, write: bool = False) -> ModelVersion:
    """The model version with its base model, or 404; 403 as for every training object."""
    queryset = ModelVersion.objects.select_related("base_model")
    return _get_for_user(user, queryset, pk, write=write)


def get_finetune_for_user(user, pk: int, *, write: bool = False) -> FineTuneJob:
    """The fine-tune with its base model, snapshot and result, or 404; 403 unless the user
    may read (or, with ``write``, change) it."""
    related = ("base_model", "snapshot__dataset", "result", "created_by")
    return _get_for_user(user, FineTuneJob.objects.select_related(*related), pk, write=write)


def get_sampling_job_for_user(user, pk: int, *, write: bool = False) -> SamplingJob:
    """The sampling job, or 404 (also for a user of another profile than the job's); 403
    unless the user may read (or, with ``write``, change) it. A restricted job (a blinded
    study's) is for admins only."""
    queryset = SamplingJob.objects.select_related("created_by", "profile")
    return _get_for_user(user, queryset, pk, write=write)


def get_sweep_for_user(user, pk: int, *, write: bool = False) -> Sweep:
    """The sweep, or 404; 403 unless the user may read (or, with ``write``, change) it."""
    queryset = Sweep.objects.select_related("base_model", "snapshot__dataset", "created_by")
    return _get_for_user(user, queryset, pk, write=write)


# --- sample screenings (a snapshot's: scoped to its value profile) ----------------------------

SCREENING_READ_ROLES = (Role.CURATOR, Role.RESEARCHER)
SCREENING_LAUNCH_ROLES = (Role.CURATOR,)  # and admins, who pass every role check


def can_launch_screening(user, snapshot=None) -> bool:
    """Curators (of the snapshot's profile, when given) and admins screen samples."""
    profile = snapshot.dataset.profile_id if snapshot is not None else None
    return has_role(user, *SCREENING_LAUNCH_ROLES, profile=profile)


def get_screening_for_user(user, pk: int) -> ScreeningRun:
    """The screening with its snapshot, or 404 (also for a user of another profile); 403
    for a member of its profile who neither curates nor researches there."""
    if not has_role(user, *SCREENING_READ_ROLES):
        raise PermissionDenied("Sample screenings are for curators, researchers and admins.")
    related = ("snapshot__dataset", "base_model", "created_by")
    run = get_object_or_404(ScreeningRun.objects.select_related(*related), pk=pk)
    check_object_profile(
        user, run.snapshot.dataset.profile_id, SCREENING_READ_ROLES,
        "Sample screenings are for this profile's curators and researchers.",
    )  # fmt: skip
    return run
