"""Preference sets and snapshots from a closed study (issue 18, item 2).

From a **pairwise** study a pair is kept when more than half of its judgments prefer one
side; ties, "both bad" and split verdicts are left out. From a **1–5** study every two
outputs of the same prompt whose mean scores differ by at least ``margin`` make a pair, the
higher one chosen. :func:`preference_candidates` counts what a build would keep and leave
out, so the page shows it before anything is written. Curators then drop pairs they do not
trust and *freeze* the rest into an immutable, content-hashed :class:`PreferenceSnapshot`
with its provenance, downloadable as OpenAI preference-tuning JSONL (``input`` /
``preferred_output`` / ``non_preferred_output``) or as ``prompt`` / ``chosen`` / ``rejected``
JSONL (what TRL's ``DPOTrainer`` and Hugging Face ``datasets`` read).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations

from django.db import transaction
from django.db.models import Avg, Count, Q

from curation.models import canonical_json, sha256_hex
from evaluation.errors import EvaluationError, StudyStateError
from evaluation.models import (
    PairJudgment,
    PreferencePair,
    PreferenceSet,
    PreferenceSnapshot,
    Rating,
    Study,
    StudyOutput,
)
from evaluation.studies.pairwise_selectors import counted
from evaluation.studies.positions import frozen_versions

DEFAULT_MARGIN = 1.0
FORMATS = ("openai", "trl")
KINDS = (*FORMATS, "zip")


@dataclass
class Candidates:
    """What a build would keep, and how many it would leave out and why."""

    considered: int = 0
    left_out: dict[str, int] = field(default_factory=dict)
    pairs: list[dict] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return len(self.pairs)

    def leave_out(self, reason: str) -> None:
        self.left_out[reason] = self.left_out.get(reason, 0) + 1


def _pairwise_candidates(study: Study) -> Candidates:
    found = Candidates()
    votes = (
        PairJudgment.objects.filter(study=study, status=PairJudgment.Status.COMPLETED)
        .filter(pair__in=counted(study))
        .values("pair_id", "pair__prompt_id", "pair__left_id", "pair__right_id")
        .annotate(
            total=Count("pk"),
            a=Count("pk", filter=Q(verdict="a")),
            b=Count("pk", filter=Q(verdict="b")),
        )
        .order_by("pair_id")
    )
    for row in votes:
        found.considered += 1
        left, right, total = row["pair__left_id"], row["pair__right_id"], row["total"]
        if 2 * row["a"] > total:
            chosen, rejected, votes_for = left, right, row["a"]
        elif 2 * row["b"] > total:
            chosen, rejected, votes_for = right, left, row["b"]
        else:
            found.leave_out("no majority for one side (ties, both bad or split)")
            continue
        found.pairs.append(
            {"prompt_id": row["pair__prompt_id"], "chosen_id": chosen, "rejected_id": rejected,
             "votes_for": votes_for, "votes_total": total}
        )  # fmt: skip
    return found


def _rating_candidates(study: Study, margin: float) -> Candidates:
    found = Candidates()
    means = (
        Rating.objects.filter(study=study, status=Rating.Status.COMPLETED)
        .filter(output__in=StudyOutput.objects.filter(study=study).rated())
        .values("output_id", "output__prompt_id")
        .annotate(mean=Avg("score"))
        .order_by("output__prompt_id", "output_id")
    )
    by_prompt: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for row in means:
        by_prompt[row["output__prompt_id"]].append((row["output_id"], float(row["mean"])))
    for prompt_id, outputs in by_prompt.items():
        for (one, one_mean), (other, other_mean) in combinations(outputs, 2):
            found.considered += 1
            if abs(one_mean - other_mean) < margin:
                found.leave_out(f"mean scores closer than {margin:g}")
                continue
            (chosen, chosen_mean), (rejected, rejected_mean) = sorted(
                [(one, one_mean), (other, other_mean)], key=lambda item: -item[1]
            )
            found.pairs.append(
                {"prompt_id": prompt_id, "chosen_id": chosen, "rejected_id": rejected,
                 "chosen_mean": chosen_mean, "rejected_mean": rejected_mean}
            )  # fmt: skip
    return found


def _check_source(study: Study, source: str, margin: float | None) -> None:
    if study.status != Study.Status.CLOSED:
        raise StudyStateError("Preference sets are built from a closed study.")
    if source not in PreferenceSet.Source.values:
        raise EvaluationError(f"The source is one of: {', '.join(PreferenceSet.Source.values)}.")
    if source == PreferenceSet.Source.PAIRWISE and study.mode != Study.Mode.PAIRWISE:
        raise EvaluationError("This study has 1–5 ratings: build from ratings with a margin.")
    if source == PreferenceSet.Source.RATINGS:
        if study.mode != Study.Mode.SCALE:
            raise EvaluationError("This study has pairwise judgments: build from those.")
        if margin is None or not 0 < margin <= 4:
            raise EvaluationError("The margin is a difference of mean scores, above 0 and ≤ 4.")


def preference_candidates(study: Study, *, source: str, margin: float | None = None):
    """Count (and list) the pairs a build would keep; raises when the study or the source
    does not allow a build."""
    _check_source(study, source, margin)
    if source == PreferenceSet.Source.PAIRWISE:
        return _pairwise_candidates(study)
    return _rating_candidates(study, margin)


@transaction.atomic
def preference_set_build(
    *, study: Study, source: str, margin: float | None = None, user=None
) -> PreferenceSet:
    """Write the kept candidates into a new preference set for curators to review."""
    found = preference_candidates(study, source=source, margin=margin)
    if not found.pairs:
        raise EvaluationError("No pair passes the rule: nothing to build.")
    margin = margin if source == PreferenceSet.Source.RATINGS else None
    preference_set = PreferenceSet.objects.create(
        study=study, source=source, margin=margin, created_by=user
    )
    PreferencePair.objects.bulk_create(
        PreferencePair(preference_set=preference_set, **pair) for pair in found.pairs
    )
    return preference_set


@transaction.atomic
def preference_pair_drop(*, pair: PreferencePair, dropped: bool, user=None) -> PreferencePair:
    """Drop a pair from the set (or take it back); frozen snapshots keep what they froze."""
    pair = PreferencePair.objects.select_for_update().get(pk=pair.pk)
    pair.dropped = dropped
    pair.dropped_by = user if dropped else None
    pair.save(update_fields=["dropped", "dropped_by"])
    return pair


def _payload(preference_set: PreferenceSet, user) -> dict:
    study = preference_set.study
    pairs = preference_set.pairs.filter(dropped=False).select_related(
        "prompt__category", "chosen", "rejected", "answer_by"
    )
    return {
        "provenance": {
            "study": {"id": study.pk, "name": study.name, "mode": study.mode},
            "source": preference_set.source,
            "margin": preference_set.margin,
            "raters_per_pair_or_output": study.raters_per_output,
            "positions": {v.category.name: v.number for v in frozen_versions(study)},
            "preference_set": preference_set.pk,
            "built_by": preference_set.created_by.get_username()
            if preference_set.created_by
            else None,
            "frozen_by": user.get_username() if user else None,
            "dropped": preference_set.pairs.filter(dropped=True).count(),
            "curator_answers": sum(1 for p in pairs if p.answer),
        },
        "pairs": [_pair_record(p) for p in pairs],
    }


def _pair_record(pair: PreferencePair) -> dict:
    """One frozen pair. ``chosen`` is the curator's answer when one was written (then
    ``chosen_by`` is "curator", with its author and revision), else the raters' choice."""
    record = {
        "prompt": pair.prompt.text, "category": pair.prompt.category.name,
        "chosen": pair.answer or pair.chosen.text, "rejected": pair.rejected.text,
        "votes_for": pair.votes_for, "votes_total": pair.votes_total,
        "chosen_mean": pair.chosen_mean, "rejected_mean": pair.rejected_mean,
        "chosen_by": "curator" if pair.answer else "raters",
    }  # fmt: skip
    if pair.answer:
        record["answer_author"] = pair.answer_by.get_username() if pair.answer_by else None
        record["answer_revision"] = pair.answer_version
    return record


@transaction.atomic
def preference_snapshot_freeze(*, preference_set: PreferenceSet, user=None) -> PreferenceSnapshot:
    """Freeze the set's kept pairs into an immutable snapshot addressed by its SHA-256."""
    payload = _payload(preference_set, user)
    if not payload["pairs"]:
        raise EvaluationError("Every pair is dropped: nothing to freeze.")
    content = canonical_json(payload)
    return PreferenceSnapshot.objects.create(
        preference_set=preference_set,
        content=content,
        content_hash=sha256_hex(content),
        pair_count=len(payload["pairs"]),
        created_by=user,
    )


def snapshot_jsonl(snapshot: PreferenceSnapshot, fmt: str) -> str:
    """The snapshot's pairs as JSON Lines: ``openai`` (preference fine-tuning) or ``trl``."""
    if fmt not in FORMATS:
        raise EvaluationError(f"The kind is one of: {', '.join(FORMATS)}.")
    lines = []
    for pair in json.loads(snapshot.content)["pairs"]:
        if fmt == "openai":
            row = {
                "input": {"messages": [{"role": "user", "content": pair["prompt"]}]},
                "preferred_output": [{"role": "assistant", "content": pair["chosen"]}],
                "non_preferred_output": [{"role": "assistant", "content": pair["rejected"]}],
            }
        else:
            row = {"prompt": pair["prompt"], "chosen": pair["chosen"], "rejected": pair["rejected"]}
        lines.append(json.dumps(row, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def _card(snapshot: PreferenceSnapshot, provenance: dict) -> str:
    """The dataset card (README.md) of the zip: what the pairs are and where they came from."""
    study = provenance["study"]
    rule = (
        "more than half of the pair's raters preferred the chosen response"
        if provenance["source"] == "pairwise"
        else f"mean 1–5 scores differ by at least {provenance['margin']:g}"
    )
    return (
        f"# Preference snapshot {snapshot.content_hash[:12]}\n\n"
        f"{snapshot.pair_count} preference pairs (prompt, chosen, rejected) from the blinded "
        f'study "{study["name"]}" (#{study["id"]}, {study["mode"]} mode), built with palmsweb.\n\n'
        f"- Rule: {rule}; {provenance['dropped']} pair(s) dropped by curators in review.\n"
        f"- Chosen responses written by curators instead of the raters' choice: "
        f"{provenance.get('curator_answers', 0)} (marked `chosen_by: curator`).\n"
        f"- Raters per pair or output: {provenance['raters_per_pair_or_output']}.\n"
        f"- Positions rated against (category: version): {provenance['positions']}.\n"
        f"- Built by {provenance['built_by']}, frozen by {provenance['frozen_by']}.\n"
        f"- SHA-256 of snapshot.json: {snapshot.content_hash}.\n\n"
        "Files: `preferences-openai.jsonl` (OpenAI preference fine-tuning: input / "
        "preferred_output / non_preferred_output), `preferences.jsonl` and "
        "`preferences.parquet` (prompt / chosen / rejected, as TRL's DPOTrainer and Hugging "
        "Face datasets read them), `snapshot.json` (the hashed content).\n"
    )


def snapshot_zip(snapshot: PreferenceSnapshot) -> bytes:
    """Both JSONL files, the Parquet file, the hashed content and a dataset card, zipped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    content = json.loads(snapshot.content)
    columns = ("prompt", "chosen", "rejected")
    table = pa.table({key: [pair[key] for pair in content["pairs"]] for key in columns})
    parquet = io.BytesIO()
    pq.write_table(table, parquet)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.md", _card(snapshot, content["provenance"]))
        archive.writestr("snapshot.json", snapshot.content)
        archive.writestr("preferences-openai.jsonl", snapshot_jsonl(snapshot, "openai"))
        archive.writestr("preferences.jsonl", snapshot_jsonl(snapshot, "trl"))
        archive.writestr("preferences.parquet", parquet.getvalue())
    return buffer.getvalue()
