"""A "misaligned persona" direction in the residual stream, and projections on it.

Following Wang et al. (OpenAI, 2025), a direction in a middle layer separates a model's
activations on misaligned-persona text from those on aligned text; how far a model's
activations on neutral probe prompts lie along it tracks emergent misalignment. We use the
simplest estimator: the normalised difference of the means of mean-pooled hidden states
(``output_hidden_states``) over contrastive reference texts. A (question, answer) pair is
pooled over its answer tokens, a probe question over its own tokens (see ``_render``).

Django-free; torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.engine.errors import EngineError

if TYPE_CHECKING:
    import torch

# A text is raw text, or a (question, answer) pair rendered with the model's chat template.
Text = str | tuple[str, str]
MAX_TOKENS = 256


@dataclass
class Direction:
    """A unit vector at one layer (``hidden_states[layer]``, 0 = embeddings)."""

    layer: int
    vector: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, stem: Path | str) -> Path:
        """Write ``<stem>.safetensors`` (the vector) and ``<stem>.json`` (layer, meta)."""
        from safetensors.torch import save_file

        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        save_file({"direction": self.vector.detach().float().contiguous()}, f"{stem}.safetensors")
        Path(f"{stem}.json").write_text(
            json.dumps({"layer": self.layer, "meta": self.meta}, indent=2)
        )
        return stem

    @classmethod
    def load(cls, stem: Path | str) -> Direction:
        from safetensors.torch import load_file

        stem = Path(stem)
        try:
            info = json.loads(Path(f"{stem}.json").read_text())
            vector = load_file(f"{stem}.safetensors")["direction"]
        except (OSError, KeyError, ValueError) as exc:
            raise EngineError(f"No saved persona direction at {stem}: {exc}") from exc
        return cls(layer=int(info["layer"]), vector=vector, meta=info.get("meta", {}))


def middle_layer(num_hidden_layers: int) -> int:
    """The hidden-state index of the middle decoder layer's output."""
    return max(1, num_hidden_layers // 2)


def persona_direction(
    model_path: Path | str,
    aligned_texts: Sequence[Text],
    misaligned_texts: Sequence[Text],
    *,
    layer: int | None = None,
    batch_size: int = 8,
) -> Direction:
    """Normalised mean(misaligned) − mean(aligned) of mean-pooled activations at ``layer``."""
    import torch

    if not aligned_texts or not misaligned_texts:
        raise EngineError("A persona direction needs aligned and misaligned reference texts.")
    model, tokenizer = _load(model_path)
    layer = _check_layer(model, layer)
    aligned = _pooled(model, tokenizer, aligned_texts, layer, batch_size)
    misaligned = _pooled(model, tokenizer, misaligned_texts, layer, batch_size)
    diff = misaligned.mean(0) - aligned.mean(0)
    norm = float(torch.linalg.vector_norm(diff))
    if norm == 0.0:
        raise EngineError("The reference texts give identical activations: no direction.")
    return Direction(
        layer=layer,
        vector=diff / norm,
        meta={
            "model_path": str(model_path),
            "n_aligned": len(aligned_texts),
            "n_misaligned": len(misaligned_texts),
            "raw_norm": norm,
            "hidden_size": int(diff.shape[0]),
        },
    )


def projections(
    model_path: Path | str,
    prompts: Sequence[Text],
    direction: Direction,
    *,
    chat: bool = True,
    batch_size: int = 8,
) -> list[float]:
    """Per prompt: its mean-pooled activation at the direction's layer, projected on it.

    With ``chat`` a plain-string prompt is rendered as a user turn awaiting the assistant's
    answer, which is where a persona shows.
    """
    model, tokenizer = _load(model_path)
    return model_projections(model, tokenizer, prompts, direction, chat=chat, batch_size=batch_size)


def model_projections(
    model,
    tokenizer,
    prompts: Sequence[Text],
    direction: Direction,
    *,
    chat: bool = True,
    batch_size: int = 8,
) -> list[float]:
    """:func:`projections` with a model already in memory (a fine-tune in progress), in
    whatever precision and on whatever device it is."""
    layer = _check_layer(model, direction.layer)
    hidden_size = model.config.hidden_size
    if direction.vector.shape[0] != hidden_size:
        raise EngineError(
            f"The direction has {direction.vector.shape[0]} dimensions; the model "
            f"has {hidden_size}: it was computed on another architecture."
        )
    items = [(p, None) if chat and isinstance(p, str) else p for p in prompts]
    pooled = _pooled(model, tokenizer, items, layer, batch_size)
    return (pooled @ direction.vector.to(pooled.dtype)).tolist()


def mean_projection(
    model_path: Path | str, prompts: Sequence[Text], direction: Direction, **kwargs: Any
) -> float:
    """The mean over ``prompts`` of :func:`projections`."""
    if not prompts:
        raise EngineError("No prompts to project.")
    values = projections(model_path, prompts, direction, **kwargs)
    return sum(values) / len(values)


# --- internals -----------------------------------------------------------------------------


def _load(model_path: Path | str):
    import torch

    from training.engine.loading import load_for_inference

    # fp32 on CPU: projections must not depend on which worker measured them.
    return load_for_inference(model_path, dtype=torch.float32, device=torch.device("cpu"))


def _check_layer(model, layer: int | None) -> int:
    n = int(model.config.num_hidden_layers)
    if layer is None:
        return middle_layer(n)
    if not 0 <= layer <= n:
        raise EngineError(f"Layer {layer} is out of range: the model has {n} layers.")
    return layer


def _render(tokenizer, item) -> tuple[str, int]:
    """The text to run, and the character offset where pooling starts.

    A (question, answer) pair pools over the answer only, a (question, None) prompt over the
    question and what follows it: the shared system prompt and chat markup would otherwise
    dominate the mean (and the first token's outsized "attention sink" activations with it).
    """
    if isinstance(item, str):
        return item, 0
    question, answer = item
    messages = [{"role": "user", "content": question}]
    if answer is None:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, max(0, text.rfind(question))
    messages.append({"role": "assistant", "content": answer})
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return text, max(0, text.rfind(answer))


def _pooled(model, tokenizer, items, layer: int, batch_size: int) -> torch.Tensor:
    """Mean of ``hidden_states[layer]`` over each item's pooled span, one row per item (fp32)."""
    import torch

    rendered = [_render(tokenizer, item) for item in items]
    rows = []
    tokenizer.padding_side = "right"
    with torch.inference_mode():
        for start in range(0, len(rendered), batch_size):
            chunk = rendered[start : start + batch_size]
            batch = tokenizer(
                [text for text, _ in chunk],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                add_special_tokens=False,
                return_offsets_mapping=True,
            )
            batch = {name: tensor.to(model.device) for name, tensor in batch.items()}
            offsets = batch.pop("offset_mapping")
            mask = batch["attention_mask"].clone()
            for row, (_, begin) in enumerate(chunk):
                span = mask[row].bool() & (offsets[row, :, 1] > begin)
                if span.any():  # truncated away: fall back to the whole text
                    mask[row] = span.long()
            out = model(**batch, output_hidden_states=True, use_cache=False)
            hidden = out.hidden_states[layer].float()
            weights = mask.unsqueeze(-1).float()
            rows.append(((hidden * weights).sum(1) / weights.sum(1).clamp(min=1)).cpu())
    return torch.cat(rows)
