"""Evaluation forms. They validate input only; views hand the cleaned data to services."""

from __future__ import annotations

import re

from django import forms

from curation.models import Category
from evaluation.errors import EvaluationError
from evaluation.models import (
    MAX_COMMENT_CHARS,
    MAX_PROMPT_CHARS,
    SCORES,
    PairJudgment,
    PromptSet,
    Study,
)
from evaluation.rubric import DEFAULT_RUBRIC
from evaluation.studies.arm_keys import MAX_LABEL_CHARS
from evaluation.studies.arm_pairs import FORMAT_HELP as ARM_PAIRS_HELP
from evaluation.studies.arm_pairs import (
    clean_arm_pairs,
    compared_numbers,
    format_arm_pairs,
    parse_arm_pairs,
)
from evaluation.studies.lifecycle import ArmSpec
from evaluation.studies.rater_pool import rater_pool_candidates
from palmsweb.models import Profile
from training.models import ModelVersion


class PromptSetForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))


class PromptSetCopyForm(forms.Form):
    """Copy a prompt set into another value profile (its categories are matched by name)."""

    profile = forms.ModelChoiceField(
        queryset=Profile.objects.none(), empty_label=None, label="Into the value profile"
    )
    name = forms.CharField(
        max_length=200, required=False, help_text="Left blank: the set's own name."
    )

    def __init__(self, *args, profiles, **kwargs):
        """``profiles``: the profiles the user may curate in, other than the set's own."""
        super().__init__(*args, **kwargs)
        self.fields["profile"].queryset = profiles


def _category_field(profile_id: int) -> forms.ModelChoiceField:
    categories = Category.objects.active().filter(profile_id=profile_id)
    return forms.ModelChoiceField(queryset=categories, empty_label=None)


class PromptForm(forms.Form):
    category = forms.ModelChoiceField(queryset=Category.objects.none(), empty_label=None)
    text = forms.CharField(max_length=MAX_PROMPT_CHARS, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args, profile_id: int, **kwargs):
        """``profile_id``: the prompt set's profile, whose categories are the choices."""
        super().__init__(*args, **kwargs)
        self.fields["category"] = _category_field(profile_id)


class PromptLinesForm(forms.Form):
    category = forms.ModelChoiceField(queryset=Category.objects.none(), empty_label=None)
    lines = forms.CharField(
        label="Prompts, one per line",
        widget=forms.Textarea(attrs={"rows": 5}),
        max_length=200 * MAX_PROMPT_CHARS,
    )

    def __init__(self, *args, profile_id: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["category"] = _category_field(profile_id)


class RubricFieldsMixin:
    """Five anchor texts, ``rubric_1`` … ``rubric_5``; :meth:`rubric` lists them."""

    @staticmethod
    def rubric_fields() -> dict[str, forms.Field]:
        return {
            f"rubric_{score}": forms.CharField(
                label=f"Score {score}",
                initial=DEFAULT_RUBRIC[score - 1],
                max_length=MAX_COMMENT_CHARS,
                widget=forms.Textarea(attrs={"rows": 2}),
            )
            for score in SCORES
        }

    def rubric(self) -> list[str]:
        return [self.cleaned_data[f"rubric_{score}"] for score in SCORES]

    def rubric_bound_fields(self) -> list:
        return [self[f"rubric_{score}"] for score in SCORES]


def _rater_field(profile_id: int) -> forms.ModelMultipleChoiceField:
    return forms.ModelMultipleChoiceField(
        queryset=rater_pool_candidates(profile_id),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Rater pool",
        help_text="Raters of this value profile. The pool needs at least as many raters as "
        "each output needs ratings. Admins are not listed: they can see which model wrote "
        "each output.",
    )


def rating_closes_on_field() -> forms.DateField:
    return forms.DateField(
        required=False, label="Rating closes on", widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Optional: the day you plan to close rating. The study warns when an arm's "
        "hosted model shuts down before it.",
    )  # fmt: skip


class StudyForm(RubricFieldsMixin, forms.Form):
    name = forms.CharField(
        max_length=200, help_text="Raters see this name: keep model and arm names out of it."
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.all())
    mode = forms.ChoiceField(
        choices=Study.Mode.choices,
        required=False,
        initial=Study.Mode.SCALE,
        help_text="1–5: each output alone on the rubric. Pairwise: two outputs of the same "
        "prompt side by side, A or B; every arm pair is judged by that many raters.",
    )
    samples_per_prompt = forms.IntegerField(min_value=1, max_value=20, initial=3)
    raters_per_output = forms.IntegerField(min_value=1, max_value=50, initial=3)
    arm_pairs = forms.CharField(
        required=False,
        max_length=500,
        help_text="Pairwise studies: which arm pairs raters compare. " + ARM_PAIRS_HELP,
    )
    temperature = forms.FloatField(min_value=0, max_value=2, initial=0.7)
    top_p = forms.FloatField(min_value=0.01, max_value=1, initial=0.9, label="Top p")
    max_new_tokens = forms.IntegerField(min_value=1, max_value=4096, initial=200)
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0)
    lease_minutes = forms.IntegerField(
        min_value=1, max_value=24 * 60, initial=10, label="Claim lease (minutes)"
    )
    rating_closes_on = rating_closes_on_field()

    def __init__(self, *args, profile_id: int, **kwargs):
        """``profile_id``: the study's value profile (the active one for a new study): its
        prompt sets and its raters are the choices."""
        super().__init__(*args, **kwargs)
        self.fields.update(self.rubric_fields())
        self.fields["prompt_set"].queryset = PromptSet.objects.filter(profile_id=profile_id)
        self.fields["raters"] = _rater_field(profile_id)
        if not self.is_bound and "raters" not in self.initial:
            self.initial["raters"] = list(rater_pool_candidates(profile_id))

    @staticmethod
    def sampling_recommendations() -> tuple:
        """Recommended sampling settings per model size, with reasons (shown by the form)."""
        from training.services import SAMPLING_DEFAULTS

        return SAMPLING_DEFAULTS

    @classmethod
    def for_study(cls, study: Study, data=None) -> StudyForm:
        initial = {
            name: getattr(study, name)
            for name in (
                "name",
                "description",
                "prompt_set",
                "mode",
                "samples_per_prompt",
                "raters_per_output",
                "temperature",
                "top_p",
                "max_new_tokens",
                "seed",
                "lease_minutes",
                "rating_closes_on",
            )
        }
        initial.update({f"rubric_{s}": text for s, text in study.rubric_items()})
        initial["raters"] = list(study.raters.all())
        initial["arm_pairs"] = format_arm_pairs(compared_numbers(study))
        return cls(data=data, initial=initial, profile_id=study.profile_id)

    def clean_arm_pairs(self) -> list[tuple[int, int]]:
        try:
            return parse_arm_pairs(self.cleaned_data.get("arm_pairs", ""))
        except EvaluationError as error:
            raise forms.ValidationError(str(error)) from None

    def service_kwargs(self) -> dict:
        data = dict(self.cleaned_data)
        for score in SCORES:
            data.pop(f"rubric_{score}")
        data["rubric"] = self.rubric()
        data["mode"] = data.get("mode") or Study.Mode.SCALE
        return data


ARM_VERSION_FIELD = re.compile(r"^arms-\d+-model_version$")


class StudyEstimateForm(forms.Form):
    """The study form's values that the estimate before *Open* depends on. Read from the
    whole study form (htmx sends it as it changes); what is missing or invalid counts as
    the form's defaults."""

    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.all())
    samples_per_prompt = forms.IntegerField(min_value=1, max_value=20)
    raters_per_output = forms.IntegerField(min_value=1, max_value=50)
    max_new_tokens = forms.IntegerField(min_value=1, max_value=4096)

    def estimate_kwargs(self, data) -> dict | None:
        """Keyword arguments for ``selectors.study_estimate``, or None without a valid
        prompt set and counts."""
        if not self.is_valid():
            return None
        pks = {
            value
            for key, value in data.items()
            if ARM_VERSION_FIELD.match(key) and str(value).isdigit()
        }
        versions = list(ModelVersion.objects.filter(pk__in=pks).select_related("base_model"))
        raters = rater_pool_candidates().filter(
            pk__in=[pk for pk in data.getlist("raters") if pk.isdigit()]
        )
        return {
            "n_prompts": self.cleaned_data["prompt_set"].prompts.count(),
            "n_arm_pairs": self._arm_pairs(data, len(versions)),
            "versions": versions,
            "samples_per_prompt": self.cleaned_data["samples_per_prompt"],
            "raters_per_output": self.cleaned_data["raters_per_output"],
            "max_new_tokens": self.cleaned_data["max_new_tokens"],
            "n_raters": raters.count(),
        }


    @staticmethod
    def _arm_pairs(data, n_arms: int) -> int | None:
        """A pairwise form's arm pairs per prompt × sample (all, when the subset is not
        valid yet); None for 1–5."""
        if data.get("mode") != Study.Mode.PAIRWISE:
            return None
        try:
            chosen = clean_arm_pairs(parse_arm_pairs(data.get("arm_pairs", "")), n_arms=n_arms,
                                     mode=Study.Mode.PAIRWISE)  # fmt: skip
        except EvaluationError:
            chosen = []
        return len(chosen) or n_arms * (n_arms - 1) // 2


class LiveStudyForm(RubricFieldsMixin, forms.Form):
    """What may change once a study is open: rubric wording, the rater pool and the planned
    rating-close date."""

    rating_closes_on = rating_closes_on_field()

    def __init__(self, *args, profile_id: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields.update(self.rubric_fields())
        self.fields["raters"] = _rater_field(profile_id)

    @classmethod
    def for_study(cls, study: Study, data=None) -> LiveStudyForm:
        initial = {f"rubric_{s}": text for s, text in study.rubric_items()}
        initial["raters"] = list(study.raters.all())
        initial["rating_closes_on"] = study.rating_closes_on
        return cls(data=data, initial=initial, profile_id=study.profile_id)

    def service_kwargs(self) -> dict:
        return {
            "rubric": self.rubric(),
            "raters": self.cleaned_data["raters"],
            "rating_closes_on": self.cleaned_data["rating_closes_on"],
        }


class ArmForm(forms.Form):
    arm = forms.ChoiceField(choices=[("", "—")] + ModelVersion.Arm.choices, required=False)
    model_version = forms.ModelChoiceField(
        # Sweep runs other than the promoted one are candidates, not study arms.
        queryset=ModelVersion.objects.for_studies().select_related("base_model"),
        required=False,
    )
    size_tag = forms.CharField(
        max_length=40, required=False, help_text="Blank: the model's parameter count."
    )
    label = forms.CharField(
        max_length=MAX_LABEL_CHARS, required=False, label="Label",
        help_text="Optional, e.g. \"values-targeted + DPO\"; blank: the role's own name. "
        "Tells two arms of one role and size apart; raters never see it.",
    )  # fmt: skip
    allow_arm_mismatch = forms.BooleanField(
        required=False, label="Confirm a label other than the model's data gives"
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("arm") and not cleaned.get("model_version"):
            raise forms.ValidationError("Choose the model version for this arm.")
        return cleaned


class BaseArmFormSet(forms.BaseFormSet):
    def specs(self) -> list[ArmSpec]:
        return [
            ArmSpec(
                # Blank: the arm the version's training data gives it.
                arm=f.cleaned_data["arm"],
                model_version=f.cleaned_data["model_version"],
                size_tag=f.cleaned_data.get("size_tag", ""),
                label=f.cleaned_data.get("label", ""),
                allow_arm_mismatch=f.cleaned_data.get("allow_arm_mismatch", False),
            )
            for f in self.forms
            if f.cleaned_data.get("model_version")
        ]

    def clean(self):
        if any(self.errors):
            return
        if not self.specs():
            raise forms.ValidationError("Add at least one arm.")


ArmFormSet = forms.formset_factory(ArmForm, formset=BaseArmFormSet, extra=0, max_num=24)
NEW_STUDY_ARMS = [{"arm": arm} for arm in ModelVersion.Arm.values]


def arm_formset(data=None, study: Study | None = None) -> BaseArmFormSet:
    """The arms editor: the study's arms, or one row per arm label for a new study, plus
    three spare rows for more sizes."""
    if study is not None:
        initial = [
            {
                "arm": a.arm,
                "model_version": a.model_version,
                "size_tag": a.size_tag,
                "label": a.label,
                "allow_arm_mismatch": a.arm_override,
            }
            for a in study.arms.select_related("model_version")
        ]
    else:
        initial = list(NEW_STUDY_ARMS)
    initial += [{}] * 3
    return ArmFormSet(data=data, initial=initial, prefix="arms")


class RatingForm(forms.Form):
    score = forms.TypedChoiceField(
        choices=[(s, str(s)) for s in SCORES],
        coerce=int,
        error_messages={
            "required": "Pick a score 1–5 first.",
            "invalid_choice": "Pick a score 1–5 first.",
        },
    )
    comment = forms.CharField(required=False, max_length=MAX_COMMENT_CHARS)


class PairJudgmentForm(forms.Form):
    verdict = forms.ChoiceField(
        choices=PairJudgment.Verdict.choices,
        error_messages={
            "required": "Choose A better, B better, tie or both bad first.",
            "invalid_choice": "Choose A better, B better, tie or both bad first.",
        },
    )
    reason = forms.CharField(required=False, max_length=MAX_COMMENT_CHARS)


class FlagForm(forms.Form):
    reason = forms.CharField(required=False, max_length=MAX_COMMENT_CHARS)


class ExcludeForm(forms.Form):
    reason = forms.CharField(required=False, max_length=MAX_COMMENT_CHARS)


class StudyPlanForm(forms.Form):
    """The study form's values the planner reads (issue 15): the prompt set, the counts
    and the expected difference (default 0.5 on the 1–5 scale)."""

    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.all())
    samples_per_prompt = forms.IntegerField(min_value=1, max_value=20)
    raters_per_output = forms.IntegerField(min_value=1, max_value=50)
    expected_difference = forms.FloatField(min_value=0.05, max_value=4.0, required=False)
    mode = forms.ChoiceField(choices=Study.Mode.choices, required=False)
    target_half_width = forms.FloatField(min_value=0.02, max_value=0.5, required=False)

    def plan(self):
        """The plan (a pairwise study's: the win rate's precision), or None when the values
        are not (yet) valid."""
        from evaluation.studies.planning import pairwise_plan_for_prompt_set, plan_for_prompt_set

        if not self.is_valid():
            return None
        data = self.cleaned_data
        design = {name: data[name] for name in ("samples_per_prompt", "raters_per_output")}
        if data.get("mode") == Study.Mode.PAIRWISE:
            return pairwise_plan_for_prompt_set(
                data["prompt_set"], target_half_width=data["target_half_width"], **design
            )
        return plan_for_prompt_set(data["prompt_set"], effect=data["expected_difference"], **design)
