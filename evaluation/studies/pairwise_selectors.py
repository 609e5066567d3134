"""Reads over a pairwise study's pairs: progress for the study and for one rater. The 1–5
selectors (:mod:`evaluation.studies.selectors`) hand over to these for a pairwise study, so
every page and API that shows progress counts pairs there."""

from __future__ import annotations

from django.db.models import Count, F, Q, Sum

from evaluation.models import PairJudgment, Study, StudyOutput, StudyPair


def in_pool(study: Study):
    """Pairs raters may be given: both outputs in the pool (none held or excluded)."""
    active = StudyOutput.Screening.ACTIVE
    return StudyPair.objects.filter(study=study, left__screening=active, right__screening=active)


def counted(study: Study):
    """Pairs whose judgments count: neither output excluded by an admin."""
    excluded = StudyOutput.Screening.EXCLUDED
    pairs = StudyPair.objects.filter(study=study)
    return pairs.exclude(left__screening=excluded).exclude(right__screening=excluded)


def pair_totals(study: Study, now) -> dict:
    """Judgments needed and completed over the counted pairs, and live claims."""
    row = counted(study).aggregate(needed=Sum("quota"), completed=Sum("completed_count"))
    live = PairJudgment.objects.filter(
        study=study, status=PairJudgment.Status.CLAIMED, expires_at__gt=now
    ).count()
    return {"needed": row["needed"] or 0, "completed": row["completed"] or 0, "live": live}


def rater_pair_counts(study: Study, rater) -> dict:
    """One rater's judgments (completed, skipped or flagged) and the pairs still open to
    them. Never counts anyone else's judgments."""
    mine = PairJudgment.objects.filter(study=study, rater=rater)
    row = mine.aggregate(
        completed=Count("pk", filter=Q(status=PairJudgment.Status.COMPLETED)),
        skipped=Count(
            "pk",
            filter=Q(status__in=[PairJudgment.Status.SKIPPED, PairJudgment.Status.FLAGGED]),
        ),
    )
    answered = mine.exclude(status=PairJudgment.Status.CLAIMED).values("pair_id")
    open_to_me = (
        in_pool(study).filter(completed_count__lt=F("quota")).exclude(pk__in=answered).count()
    )
    return {**row, "open_to_me": open_to_me}
