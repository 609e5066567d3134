"""Copying a prompt set: within its value profile (a new, editable set) or into another
profile the user curates in, where each prompt takes that profile's category of the same
name, so two profiles' studies can rate the same prompts, each against its own positions."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render

from evaluation.access import copy_target_profiles, get_prompt_set_for_user, prompt_write_access
from evaluation.errors import EvaluationError
from evaluation.studies import prompt_sets
from evaluation.studies.forms import PromptSetCopyForm
from palmsweb.lib.http import require_get_post, require_post


@require_post
@prompt_write_access
def prompt_set_copy(request, pk: int):
    prompt_set = get_prompt_set_for_user(request.user, pk, write=True)
    copy = prompt_sets.prompt_set_copy(prompt_set=prompt_set, user=request.user)
    messages.success(request, f"Copied {prompt_set.name} to {copy.name}; edit it freely.")
    return redirect(copy)


@require_get_post
@prompt_write_access
def prompt_set_copy_to_profile(request, pk: int):
    """Pick a profile (one the user curates in) and copy the set there. A category without
    a counterpart of the same name there refuses the copy (400, nothing created)."""
    prompt_set = get_prompt_set_for_user(request.user, pk)
    profiles = copy_target_profiles(request.user, prompt_set)
    form = PromptSetCopyForm(request.POST or None, profiles=profiles)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                copy = prompt_sets.prompt_set_copy(
                    prompt_set=prompt_set, user=request.user, name=form.cleaned_data["name"],
                    profile=form.cleaned_data["profile"],
                )  # fmt: skip
            except EvaluationError as error:
                form.add_error(None, str(error))
            else:
                target = form.cleaned_data["profile"].name
                messages.success(request, f"Copied {prompt_set.name} into {target} as {copy.name}.")
                return redirect(copy)
        status = 400
    context = {"form": form, "prompt_set": prompt_set, "has_targets": profiles.exists()}
    return render(request, "evaluation/prompt_set_copy.html", context, status=status)
