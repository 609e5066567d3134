"""Writing a fine-tuned model to disk: full weights from the fp32 masters, or the LoRA
adapter, always into a temporary sibling directory renamed into place, so nobody ever sees
half a model. torch is imported inside the functions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

METADATA_FILE = "palms_metadata.json"


def write_model_dir(
    output_dir: Path, write_weights: Callable[[Path], None], tokenizer: Any, meta: dict[str, Any]
) -> None:
    """Have ``write_weights`` fill a temporary sibling of ``output_dir``, add the tokenizer
    and the metadata file, then rename it into place. ``output_dir`` must be absent or empty."""
    import shutil
    import tempfile

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    if output_dir.exists():
        output_dir.rmdir()  # empty (checked before training)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        write_weights(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
        tmp.chmod(0o755)
        tmp.rename(output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def base_checkpoint_dtype(base_model_path: Path) -> Any:
    """The dtype the base checkpoint was stored in (a saved fine-tune keeps it)."""
    import torch

    from training.engine.loading import adapter_base_path, is_adapter_dir

    source = adapter_base_path(base_model_path) if is_adapter_dir(base_model_path) else None
    config_file = (source or base_model_path) / "config.json"
    stored = json.loads(config_file.read_text())
    name = stored.get("dtype") or stored.get("torch_dtype") or "float32"
    return getattr(torch, str(name), torch.float32)


def save_full(model, optimizer: Any, base_model_path: Path, tmp: Path):
    # Save in the base checkpoint's precision, from the fp32 masters: bf16 rounding would
    # erase much of a small-learning-rate fine-tune.
    dtype = base_checkpoint_dtype(base_model_path)
    optimizer.write_masters_into(dtype)
    model.to(dtype)
    model.config.use_cache = True
    model.save_pretrained(tmp, safe_serialization=True)


@contextmanager
def tensors_restored(model) -> Iterator[None]:
    """Put every parameter, buffer and the KV-cache setting back as they were on exit:
    ``save_full`` casts the model and writes the fp32 masters into it."""
    params = [(p, p.data) for p in model.parameters()]
    buffers = [(m, name, b) for m in model.modules() for name, b in m._buffers.items()]
    use_cache = model.config.use_cache
    try:
        yield
    finally:
        for param, data in params:
            param.data = data
        for module, name, buffer in buffers:
            module._buffers[name] = buffer
        model.config.use_cache = use_cache


def save_adapter(model, base_model_path: Path, tmp: Path, state_dict: Any = None) -> None:
    """Write the LoRA adapter, naming its base by absolute path. ``state_dict``: the full
    (gathered) state of a sharded model, from which peft keeps the adapter's part."""
    for peft_config in model.peft_config.values():
        peft_config.base_model_name_or_path = str(Path(base_model_path).resolve())
    if state_dict is None:
        model.save_pretrained(tmp)
    else:
        model.save_pretrained(tmp, state_dict=state_dict)
