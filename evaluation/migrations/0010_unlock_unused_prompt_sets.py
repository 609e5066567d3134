"""A prompt set is locked exactly while a study uses it: unlock the sets no study uses
(the demo set was created locked, and deleting a draft study used to leave its set locked)."""

from django.db import migrations


def unlock_unused(apps, schema_editor):
    PromptSet = apps.get_model("evaluation", "PromptSet")
    PromptSet.objects.filter(locked_at__isnull=False, studies__isnull=True).update(locked_at=None)


class Migration(migrations.Migration):
    dependencies = [("evaluation", "0009_study_event_arms_revealed")]

    operations = [migrations.RunPython(unlock_unused, migrations.RunPython.noop)]
