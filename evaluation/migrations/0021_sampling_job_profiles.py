"""Record on each existing sampling job the value profile whose prompts it sampled: a study's
job and its co-occurrence runs' jobs belong to the study's profile, a misalignment
evaluation's to the snapshot its conditional probes quote (else its re-alignment run's).
Until now every unrestricted job was readable by members of every profile."""

from django.db import migrations


def record_profiles(apps, schema_editor):
    Study = apps.get_model("evaluation", "Study")
    ScoringRun = apps.get_model("evaluation", "ScoringRun")
    MisalignmentEval = apps.get_model("evaluation", "MisalignmentEval")
    SamplingJob = apps.get_model("training", "SamplingJob")
    owners = {}
    for study in Study.objects.exclude(sampling_job=None).select_related("prompt_set"):
        owners[study.sampling_job_id] = study.prompt_set.profile_id
    for run in ScoringRun.objects.filter(kind="cooccurrence").select_related("study__prompt_set"):
        job_id = (run.options or {}).get("sampling_job_id")
        if isinstance(job_id, int):
            owners.setdefault(job_id, run.study.prompt_set.profile_id)
    paths = ("conditional__snapshot__dataset__profile", "realignment__snapshot__dataset__profile")
    evaluations = MisalignmentEval.objects.exclude(sampling_job=None)
    for job_id, *profiles in evaluations.values_list("sampling_job", *paths):
        owner = next((pk for pk in profiles if pk is not None), None)
        if owner is not None:
            owners.setdefault(job_id, owner)
    for job_id, profile_id in owners.items():
        SamplingJob.objects.filter(pk=job_id).update(profile_id=profile_id)


class Migration(migrations.Migration):
    dependencies = [
        ("evaluation", "0020_study_rating_closes_on_exitkitrun"),
        ("training", "0015_samplingjob_profile"),
    ]

    operations = [migrations.RunPython(record_profiles, migrations.RunPython.noop)]
