"""Value profiles and who works in them.

A profile is one application context of the PALMS process ("a children's tutor", "a clinical
triage assistant"): its own categories and positions, datasets, prompt sets and studies.
Base models, model versions and jobs are shared by every profile (one model adapted to
several sets of values). Curator, rater and researcher are roles *in a profile*
(:class:`Membership`); admin is site-wide (staff, or the ``admin`` group).

These models sit in the site layer, below ``curation``, so that every app can point at a
profile and ``palmsweb.roles`` can answer "what may this user do in that profile?".
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse

DEFAULT_PROFILE_SLUG = "default"
DEFAULT_PROFILE_NAME = "Default"


class ProfileQuerySet(models.QuerySet):
    def default(self) -> Profile:
        """The profile that data created before profiles existed moved into, and where rows
        created without naming a profile go (created on first use)."""
        profile, _ = self.get_or_create(
            slug=DEFAULT_PROFILE_SLUG,
            defaults={
                "name": DEFAULT_PROFILE_NAME,
                "description": "Data from before profiles existed, and anything created "
                "without naming a profile.",
            },
        )
        return profile


class Profile(models.Model):
    """An application context: its own value positions, datasets, prompt sets and studies."""

    name = models.CharField(max_length=120, unique=True)
    slug = models.SlugField(max_length=120, unique=True)
    description = models.TextField(blank=True, help_text="What the model is for here.")
    audience = models.CharField(
        max_length=200, blank=True, help_text="Who the model's users are (e.g. children 8–12)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ProfileQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("profile-edit", args=[self.pk])


def default_profile_pk() -> int:
    """Field default of the apps' ``profile`` foreign keys (:meth:`ProfileQuerySet.default`)."""
    return Profile.objects.default().pk


def profile_pk(profile: Profile | int | None) -> int:
    """The id of ``profile`` (a row or an id); the default profile's when None."""
    if profile is None:
        return default_profile_pk()
    return profile if isinstance(profile, int) else profile.pk


class Membership(models.Model):
    """One role a user holds in one profile; a user may hold several roles in a profile and
    different roles in different profiles."""

    class Role(models.TextChoices):
        CURATOR = "curator", "Curator"
        RATER = "rater", "Rater"
        RESEARCHER = "researcher", "Researcher"

    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["profile__name", "user__username", "role"]
        constraints = [
            models.UniqueConstraint(
                fields=["profile", "user", "role"], name="membership_unique_role"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} in {self.profile}"
