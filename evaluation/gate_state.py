"""What a model version's misalignment gate says, for every room that shows or heeds it:
the gate pages (``evaluation.alignment``) and study creation (``evaluation.studies``), which
warns about arms whose version failed the gate or was never gated. Reads only; the gate
itself is measured in ``evaluation.alignment.gate``.
"""

from __future__ import annotations

from collections.abc import Iterable

from evaluation.access import gates_seen_in_profile
from evaluation.gate_models import ModelGate
from training.models import ModelVersion

Status = ModelGate.Status


def latest_gates(version_ids: Iterable[int], gates=None) -> dict[int, ModelGate]:
    """Each version's newest gate (any status) among ``gates`` (a queryset; default: all,
    the gate pages pass the ones the reader may see)."""
    gates = ModelGate.objects.all() if gates is None else gates
    latest: dict[int, ModelGate] = {}
    for gate in gates.filter(model_version_id__in=list(version_ids)).order_by(
        "model_version_id", "-created_at", "-pk"
    ):
        latest.setdefault(gate.model_version_id, gate)
    return latest


def gate_state(gate: ModelGate | None) -> str:
    """What a version shows: pass, fail, not measured, measuring, or never gated."""
    if gate is None:
        return "never gated"
    if gate.status == Status.MEASURING:
        return "measuring"
    if gate.status == Status.FAILED:
        return "not measured"
    return gate.get_verdict_display().lower()


def gate_warnings(versions: Iterable[ModelVersion], gates=None) -> list[str]:
    """Why a study should think twice about these versions (base versions are the
    reference and are never gated): a failed gate, or no gate verdict at all, among
    ``gates`` (a queryset; default: all)."""
    versions = [v for v in versions if v.arm != ModelVersion.Arm.BASE]
    gates = latest_gates((v.pk for v in versions), gates)
    warnings = []
    for version in versions:
        gate = gates.get(version.pk)
        state = gate_state(gate)
        if state == "fail":
            failed = [c["name"] for c in gate.result.get("criteria", []) if c["verdict"] == "fail"]
            warnings.append(
                f"{version.name} failed the misalignment gate (gate #{gate.pk}: "
                f"{', '.join(failed)})."
            )
        elif state in {"never gated", "measuring", "not measured"}:
            warnings.append(f"{version.name} has no misalignment gate verdict ({state}).")
    return warnings


def study_gate_warnings(study) -> list[str]:
    """The gate warnings of a study's arms (a warning, never a refusal: the study is made),
    from the gates its profile's members may see: another profile's gate (on an evaluation
    quoting that profile's data) is not theirs to read."""
    seen = gates_seen_in_profile(study.profile_id, ModelGate.objects.all())
    arms = study.arms.select_related("model_version")
    return gate_warnings((arm.model_version for arm in arms), seen)
