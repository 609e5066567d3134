"""The study planner's API payloads (``POST /api/studies/plan/``): the design to plan and
the answer for each mode, 1–5 (power of the paired t) or pairwise (win-rate precision)."""

from __future__ import annotations

from rest_framework import serializers

from evaluation.models import PromptSet, Study
from palmsweb.lib.drf import RejectUnknownFieldsMixin


class StudyPlanRequestSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """The design to plan: a prompt set (its categories and prompts) and the counts."""

    prompt_set = serializers.PrimaryKeyRelatedField(queryset=PromptSet.objects.all())
    samples_per_prompt = serializers.IntegerField(min_value=1, max_value=20, default=3)
    raters_per_output = serializers.IntegerField(min_value=1, max_value=50, default=3)
    expected_difference = serializers.FloatField(min_value=0.05, max_value=4.0, default=0.5)
    mode = serializers.ChoiceField(
        choices=Study.Mode.choices, default=Study.Mode.SCALE,
        help_text="1–5 ratings (power of the paired t) or pairwise (win-rate precision).",
    )  # fmt: skip
    target_half_width = serializers.FloatField(
        min_value=0.02, max_value=0.5, default=0.15,
        help_text="Pairwise only: the 95% half-width a win rate should reach.",
    )  # fmt: skip


class StudyPlanSerializer(serializers.Serializer):
    """Power of the design for the expected difference, and what would reach the target."""

    mode = serializers.ChoiceField(choices=[Study.Mode.SCALE])
    effect = serializers.FloatField(help_text="The expected difference (1–5 scale).")
    alpha = serializers.FloatField()
    target = serializers.FloatField(help_text="The power aimed for (0.8).")
    design = serializers.DictField(help_text="categories, prompts per category, samples, raters")
    components = serializers.DictField(help_text="Variance components used.")
    components_source = serializers.ChoiceField(
        choices=["prior", "study"], help_text="The prior, or the last closed study's ratings."
    )
    components_study = serializers.IntegerField(allow_null=True)
    sd_difference = serializers.FloatField(help_text="SD of one prompt's difference.")
    per_category_power = serializers.FloatField(
        allow_null=True, help_text="At α/categories (Holm's strictest step)."
    )
    per_category_power_unadjusted = serializers.FloatField(allow_null=True)
    overall_power = serializers.FloatField(allow_null=True)
    per_category_mde = serializers.FloatField(allow_null=True)
    overall_mde = serializers.FloatField(allow_null=True)
    prompts_per_category_for_target = serializers.IntegerField(allow_null=True)
    samples_for_target = serializers.IntegerField(allow_null=True)
    raters_for_target = serializers.IntegerField(allow_null=True)
    overall_prompts_per_category_for_target = serializers.IntegerField(allow_null=True)
    method = serializers.CharField()
    notes = serializers.ListField(child=serializers.CharField())


class PairwisePlanSerializer(serializers.Serializer):
    """How precisely a pairwise design measures each arm pair's win rate (prompts as the
    unit, worst case)."""

    mode = serializers.ChoiceField(choices=[Study.Mode.PAIRWISE])
    design = serializers.DictField(
        help_text="categories, prompts, prompts per category, samples, raters"
    )
    judgments_per_arm_pair = serializers.IntegerField()
    win_rate_half_width = serializers.FloatField(help_text="Over all prompts, 95%.")
    per_category_win_rate_half_width = serializers.FloatField(
        help_text="Over the smallest category's prompts, 95%."
    )
    target_half_width = serializers.FloatField()
    prompts_for_target = serializers.IntegerField(
        help_text="Prompts (per category, for per-category rates) the target needs."
    )
    method = serializers.CharField()
