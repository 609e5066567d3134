"""Django admin pieces for objects that belong to one value profile: the profile is chosen
when the object is added and fixed after (a dataset, category or prompt set never changes
profile: its samples, prompts and snapshots were written for that profile's positions)."""

from __future__ import annotations

from django import forms
from django.contrib import admin


class UniqueInProfileForm(forms.ModelForm):
    """Names (and slugs) unique within the object's profile, case-insensitively as the
    app's services hold them. Checked here because the database constraint on (profile,
    name) is skipped by the form once ``profile`` is read-only, which would turn a clash
    into a server error."""

    unique_in_profile = ("name", "slug")

    def clean(self):
        cleaned = super().clean()
        chosen = cleaned.get("profile")
        profile_id = chosen.pk if chosen is not None else self.instance.profile_id
        if profile_id is None:
            return cleaned  # no profile chosen: the form already says so
        rows = self._meta.model.objects.filter(profile_id=profile_id).exclude(pk=self.instance.pk)
        for field in self.unique_in_profile:
            value = cleaned.get(field)
            if value and rows.filter(**{f"{field}__iexact": value.strip()}).exists():
                self.add_error(field, f"This profile already has one with this {field}.")
        return cleaned


class ProfileFixedAdmin(admin.ModelAdmin):
    """``profile`` is chosen on add and read-only on change."""

    form = UniqueInProfileForm

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        return fields if obj is None else [*fields, "profile"]
