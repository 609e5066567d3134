"""Restrict the sampling jobs of studies that are not unblinded yet (they were readable by
curators and researchers, which let them join outputs to models before unblinding)."""

from django.db import migrations


def restrict(apps, schema_editor):
    Study = apps.get_model("evaluation", "Study")
    SamplingJob = apps.get_model("training", "SamplingJob")
    jobs = Study.objects.filter(sampling_job__isnull=False, unblinded_at__isnull=True)
    SamplingJob.objects.filter(pk__in=jobs.values("sampling_job")).update(restricted=True)


class Migration(migrations.Migration):
    dependencies = [
        ("evaluation", "0004_judge_scoring_realignment"),
        ("training", "0003_samplingjob_restricted"),
    ]

    operations = [migrations.RunPython(restrict, migrations.RunPython.noop)]
