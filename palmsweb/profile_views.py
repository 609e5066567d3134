"""Value profile pages: the list (everyone sees their own, admins all), the switcher in the
navigation bar, and the admins' create, edit and membership pages."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from palmsweb import profile_services
from palmsweb.lib.http import require_get, require_get_post, require_post
from palmsweb.models import Membership, Profile
from palmsweb.profiles import member_profile_ids, switch_profile
from palmsweb.roles import PROFILE_ROLES, Role, is_site_admin, memberships, role_required

admin_only = role_required(Role.ADMIN)


class ProfileForm(forms.Form):
    name = forms.CharField(max_length=120)
    audience = forms.CharField(
        max_length=200, required=False, help_text="Who the model's users are here."
    )
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="The application context: what the model is for.",
    )  # fmt: skip


class MembershipForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=[(role.value, role.value) for role in PROFILE_ROLES])


@require_get
@login_required
def profile_list(request):
    """The profiles the user belongs to, with their roles there (admins: every profile)."""
    ids = member_profile_ids(request.user)
    profiles = Profile.objects.filter(pk__in=ids).annotate(
        n_members=Count("memberships__user", distinct=True),
        n_categories=Count("categories", distinct=True),
        n_datasets=Count("datasets", distinct=True),
    )
    held = memberships(request.user)
    rows = [(profile, sorted(held.get(profile.pk, ()))) for profile in profiles]
    context = {"rows": rows, "is_admin": is_site_admin(request.user)}
    return render(request, "profiles/profile_list.html", context)


@require_post
@login_required
def profile_switch(request):
    """Make another profile the active one, then go back where the user was."""
    pk = request.POST.get("profile", "")
    profile = get_object_or_404(Profile, pk=int(pk)) if pk.isdigit() else None
    if profile is None:
        return redirect("profile-index")
    switch_profile(request, profile)
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        back = "/"
    messages.info(request, f"You are working in the profile {profile.name}.")
    return redirect(back or "/")


@require_get_post
@admin_only
def profile_create(request):
    form = ProfileForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            profile = profile_services.profile_create(**form.cleaned_data)
        except profile_services.ProfileError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Created the profile {profile.name}; add its members.")
            return redirect(profile)
    status = 400 if request.method == "POST" else 200
    return render(request, "profiles/profile_form.html", {"form": form}, status=status)


def _detail_context(profile: Profile, form=None, member_form=None) -> dict:
    initial = {"name": profile.name, "audience": profile.audience,
               "description": profile.description}  # fmt: skip
    return {
        "profile": profile,
        "form": form or ProfileForm(initial=initial),
        "member_form": member_form or MembershipForm(),
        "members": profile_services.members_by_role(profile),
    }


@require_get_post
@admin_only
def profile_detail(request, pk: int):
    """Edit the profile and see its members by role (admins)."""
    profile = get_object_or_404(Profile, pk=pk)
    form = ProfileForm(request.POST or None) if request.method == "POST" else None
    if form is not None and form.is_valid():
        try:
            profile_services.profile_update(profile=profile, **form.cleaned_data)
        except profile_services.ProfileError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Saved the profile {profile.name}.")
            return redirect(profile)
    status = 400 if form is not None else 200
    return render(
        request, "profiles/profile_detail.html", _detail_context(profile, form), status=status
    )


@require_post
@admin_only
def membership_add(request, pk: int):
    profile = get_object_or_404(Profile, pk=pk)
    form = MembershipForm(request.POST)
    if form.is_valid():
        try:
            membership = profile_services.membership_add(profile=profile, **form.cleaned_data)
        except profile_services.ProfileError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"{membership.user} is now {membership.role} here.")
            return redirect(profile)
    context = _detail_context(profile, member_form=form)
    return render(request, "profiles/profile_detail.html", context, status=400)


@require_post
@admin_only
def membership_remove(request, pk: int):
    membership = get_object_or_404(Membership.objects.select_related("profile", "user"), pk=pk)
    profile_services.membership_remove(membership=membership)
    messages.success(request, f"{membership.user} is no longer {membership.role} here.")
    return redirect(membership.profile)
