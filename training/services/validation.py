"""Validation data for a local fine-tune: a separate validation snapshot, or a share of the
training snapshot held out per category (stratified), so every category is measured and
none is left untrained. The engine measures the loss (``training.engine.validation``)."""

from __future__ import annotations

import json
import random
from collections import defaultdict

from curation.models import Snapshot
from curation.services import snapshot_chat_examples
from training.services.errors import TrainingError

VALIDATION_HYPERPARAMETERS = ("validation_share", "eval_every_steps", "keep_best_validation")


def held_out_indexes(items: list[dict], share: float, seed: int) -> list[int]:
    """Positions in ``items`` to hold out: ``share`` of each category's items, rounded, at
    most all but one of them (each category keeps something to train on), drawn with
    ``seed`` so a re-run holds out the same ones."""
    by_category: dict[str | None, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_category[item.get("category")].append(index)
    rng = random.Random(seed)
    held: list[int] = []
    for members in by_category.values():
        count = min(round(len(members) * share), len(members) - 1)
        held += rng.sample(members, count)
    return sorted(held)


def check_validation(
    *, snapshot: Snapshot, validation_snapshot: Snapshot | None, hp: dict, local: bool
) -> list[int]:
    """Refuse a validation set-up that cannot work; the held-out positions (or [])."""
    share = hp.get("validation_share", 0)
    keep_best = hp.get("keep_best_validation", False)
    if not (validation_snapshot or share or "eval_every_steps" in hp or keep_best):
        return []
    if not local:
        _check_hosted(hp)
    if validation_snapshot is not None and share:
        raise TrainingError("Give a validation snapshot or a validation_share, not both.")
    if validation_snapshot is not None and validation_snapshot.pk == snapshot.pk:
        raise TrainingError("The validation snapshot is the training snapshot: choose another.")
    if validation_snapshot is None and not share:
        wanted = "keep_best_validation" if keep_best else "eval_every_steps"
        raise TrainingError(f"{wanted} needs a validation snapshot or a validation_share.")
    if validation_snapshot is not None:
        return []
    held = held_out_indexes(snapshot.items(), share, hp.get("seed", 0))
    if not held:
        raise TrainingError(
            f"A validation_share of {share:g} holds out no sample of this snapshot (each "
            "category keeps at least one to train on): raise it or give a validation snapshot."
        )
    return held


def _check_hosted(hp: dict) -> None:
    """A hosted provider measures a validation file on its own schedule and keeps its own
    checkpoints: only the validation data is ours to choose."""
    if "eval_every_steps" in hp:
        raise TrainingError(
            "eval_every_steps needs the local backend: a hosted provider measures the "
            "validation file on its own schedule (Together: once per epoch)."
        )
    if hp.get("keep_best_validation"):
        raise TrainingError(
            "keep_best_validation needs the local backend: a hosted provider saves the last "
            "step's weights."
        )


def examples_jsonl(examples: list[dict]) -> bytes:
    """Chat examples as the JSONL a hosted provider takes (as ``snapshot_jsonl``)."""
    return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples).encode()


def split_examples(job) -> tuple[list[dict], list[dict]]:
    """A fine-tune's (training, validation) chat examples."""
    examples = snapshot_chat_examples(job.snapshot)
    if job.validation_snapshot is not None:
        return examples, snapshot_chat_examples(job.validation_snapshot)
    held = set(job.held_out_items)
    train = [example for index, example in enumerate(examples) if index not in held]
    return train, [examples[index] for index in sorted(held)]


def validation_provenance(job) -> dict:
    """What a saved version records of its validation data ({} without any)."""
    if job.validation_snapshot_id:
        return {"validation_snapshot_id": job.validation_snapshot_id,
                "validation_snapshot_hash": job.validation_snapshot.content_hash}  # fmt: skip
    if job.held_out_items:
        return {"held_out_items": list(job.held_out_items),
                "validation_share": job.hyperparameters.get("validation_share")}  # fmt: skip
    return {}
