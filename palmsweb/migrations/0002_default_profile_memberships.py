"""Move the site-wide curator, rater and researcher groups into memberships of the default
profile, so that nobody loses a role when roles become per profile. The admin group stays
a group (admin is site-wide). The groups are emptied, not deleted, and the reverse
migration refills them from the default profile's memberships."""

from django.db import migrations

PROFILE_ROLES = ("curator", "rater", "researcher")


def default_profile(apps):
    Profile = apps.get_model("palmsweb", "Profile")
    profile, _ = Profile.objects.get_or_create(
        slug="default",
        defaults={
            "name": "Default",
            "description": "Data from before profiles existed, and anything created without "
            "naming a profile.",
        },
    )
    return profile


def groups_to_memberships(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Membership = apps.get_model("palmsweb", "Membership")
    profile = default_profile(apps)
    for group in Group.objects.filter(name__in=PROFILE_ROLES):
        for user in group.user_set.all():
            Membership.objects.get_or_create(profile=profile, user=user, role=group.name)
        group.user_set.clear()


def memberships_to_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Membership = apps.get_model("palmsweb", "Membership")
    for membership in Membership.objects.filter(profile__slug="default"):
        group, _ = Group.objects.get_or_create(name=membership.role)
        group.user_set.add(membership.user)


class Migration(migrations.Migration):
    dependencies = [
        ("palmsweb", "0001_profiles"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(groups_to_memberships, memberships_to_groups)]
