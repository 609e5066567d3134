"""Issue 12, item 15: the per-category chart has a fixed width and constant font sizes,
with horizontal labels, whatever the number of categories."""

from __future__ import annotations

import re

import pytest

from curation.models import Category
from evaluation.report.build import build_report
from evaluation.report.charts import category_chart
from tests.evaluation.test_report import closed_study

pytestmark = pytest.mark.django_db


def chart_for(n_categories: int, prefix: str) -> str:
    setup = closed_study(n_categories=n_categories, per_category=1, rater_prefix=prefix)
    return str(category_chart(build_report(setup.study, blinded=False, include_arms=True)))


def size(svg: str) -> tuple[int, int]:
    match = re.match(r'<svg [^>]*width="(\d+)" height="(\d+)"', svg)
    return int(match.group(1)), int(match.group(2))


def test_the_chart_keeps_its_width_and_fonts_whatever_the_categories(no_queue):
    few, many = chart_for(1, "few"), chart_for(8, "many")
    (few_w, few_h), (many_w, many_h) = size(few), size(many)
    assert few_w == many_w == 554  # label column + plot + values, in pixels
    # One row per category (plus "All categories"), each as tall as the other.
    assert (many_h - few_h) == 7 * (few_h - 26) // 2
    for svg in (few, many):
        assert set(re.findall(r'font-size="([\d.]+)"', svg)) == {"11", "12"}
        assert "rotate(" not in svg  # labels read horizontally
        assert 'viewBox="0 0 554 ' in svg and "chart-fixed" in svg
    assert many.count("<rect ") == 9 * 3  # 8 categories + overall, 3 arms


def test_long_category_names_are_shortened_with_the_full_name_kept(no_queue):
    setup = closed_study(n_categories=2, per_category=1, rater_prefix="long")
    long_name = "Terrorism (including white supremacy and violent extremism)"
    category = Category.objects.filter(eval_prompts__prompt_set=setup.study.prompt_set).first()
    Category.objects.filter(pk=category.pk).update(name=long_name)
    svg = str(category_chart(build_report(setup.study, blinded=False, include_arms=True)))
    labels = re.findall(r"<title>([^<]*)</title>([^<]*)</text>", svg)
    assert all(len(short) <= 28 for _, short in labels)
    assert (long_name, long_name[:27] + "…") in labels
    assert ("All categories", "All categories") in labels
