"""The choices of evaluation's model fields, one TextChoices class each. The models expose
them under their usual names (``Study.Status``, ``Rating.Status``, ``StudyOutput.Screening``…);
the values are what the database stores, so they never change without a migration."""

from django.db import models


class RunStatus(models.TextChoices):
    """The life of a background run over a study (scoring runs, exports)."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class StudyStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SAMPLING = "sampling", "Sampling"
    RATING = "rating", "Rating"
    CLOSED = "closed", "Closed"


class StudyMode(models.TextChoices):
    """How raters judge outputs: one at a time on the 1–5 rubric, or two side by side."""

    SCALE = "scale", "1–5 ratings"
    PAIRWISE = "pairwise", "Pairwise (A or B)"


class PairVerdict(models.TextChoices):
    """A pairwise judgment, in the rater's own A/B terms (A is the pair's left output)."""

    A_BETTER = "a", "A better"
    B_BETTER = "b", "B better"
    TIE = "tie", "Tie"
    BOTH_BAD = "both_bad", "Both bad"


class OutputScreening(models.TextChoices):
    ACTIVE = "active", "In the pool"
    HELD = "held", "Held for review"
    EXCLUDED = "excluded", "Excluded"


class RatingStatus(models.TextChoices):
    CLAIMED = "claimed", "Claimed"
    COMPLETED = "completed", "Completed"
    SKIPPED = "skipped", "Skipped"
    FLAGGED = "flagged", "Flagged"
    EXPIRED = "expired", "Lease expired"


class StudyEventKind(models.TextChoices):
    CREATED = "created", "Created"
    UPDATED = "updated", "Settings changed"
    OPENED = "opened", "Opened: sampling launched"
    SAMPLING_FAILED = "sampling_failed", "Sampling failed"
    RATING_OPENED = "rating_opened", "Rating opened"
    OUTPUT_CLEARED = "output_cleared", "Output cleared for rating"
    OUTPUT_EXCLUDED = "output_excluded", "Output excluded"
    ARMS_REVEALED = "arms_revealed", "Arms revealed on the outputs page (before unblinding)"
    ARMS_HIDDEN = "arms_hidden", "Arms hidden again on the outputs page"
    CLOSED = "closed", "Closed"
    UNBLINDED = "unblinded", "Unblinded"


class ScoringKind(models.TextChoices):
    TOXICITY = "toxicity", "Toxicity"
    COOCCURRENCE = "cooccurrence", "Co-occurrence"
    CAPABILITY = "capability", "Capability"
    JUDGE = "judge", "LLM judge (1–5)"
    ADHERENCE = "adherence", "Held-out adherence"


class ExportFormat(models.TextChoices):
    CSV = "csv", "CSV"
    JSONL = "jsonl", "JSON Lines"
    PARQUET = "parquet", "Parquet"
    BUNDLE = "bundle", "Study bundle (zip)"


class MisalignmentStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SAMPLING = "sampling", "Sampling"
    JUDGING = "judging", "Judging"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class MisalignmentVerdict(models.TextChoices):
    ALIGNED = "aligned", "Aligned"
    MISALIGNED = "misaligned", "Misaligned"
    EXCLUDED = "excluded", "Excluded"


class RealignmentStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    TRAINING = "training", "Training"
    EVALUATING = "evaluating", "Evaluating"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
