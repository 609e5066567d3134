"""Chat-format training data: validation, answer-only labels, length-grouped batches.

An example is an OpenAI chat-format dict: ``{"messages": [{"role": ..., "content": ...}]}``.
Assistant messages may carry ``"weight": 0`` (as in OpenAI's format) to be kept as context
but not trained on.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.engine.errors import EngineError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # the label value torch's cross-entropy skips
ROLES = frozenset({"system", "user", "assistant"})
_MESSAGE_KEYS = frozenset({"role", "content", "name", "weight"})
_EXAMPLE_KEYS = frozenset({"messages"})

Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class EncodedExample:
    """Token ids and labels of one example; labels are IGNORE_INDEX outside answers."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_label_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


# --- validation ----------------------------------------------------------------------------


def validate_examples(examples: Sequence[Mapping[str, Any]]) -> list[Messages]:
    """Check every example and return its messages; the first problem raises EngineError."""
    if isinstance(examples, str | bytes) or not isinstance(examples, Sequence):
        raise EngineError("Training data must be a list of chat examples.")
    if not examples:
        raise EngineError("The dataset is empty: there is nothing to train on.")
    return [_validate_example(index, example) for index, example in enumerate(examples)]


def _validate_example(index: int, example: Any) -> Messages:
    def bad(reason: str) -> EngineError:
        return EngineError(f"Example at index {index}: {reason}")

    if not isinstance(example, Mapping):
        raise bad('expected a dict like {"messages": [...]}.')
    unknown = set(example) - _EXAMPLE_KEYS
    if unknown:
        raise bad(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}.")
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad('"messages" must be a non-empty list.')
    for position, message in enumerate(messages):
        _validate_message(message, position, bad)
    roles = [message["role"] for message in messages]
    if "system" in roles[1:]:
        raise bad("a system message may only come first.")
    conversation = roles[1:] if roles[0] == "system" else roles
    if not conversation or conversation[0] != "user":
        raise bad("the conversation must start with a user message.")
    if not any(m["role"] == "assistant" and m.get("weight", 1) for m in messages):
        raise bad("there is no assistant answer to learn from.")
    return [dict(message) for message in messages]


def _validate_message(message: Any, position: int, bad) -> None:
    where = f"message {position}"
    if not isinstance(message, Mapping):
        raise bad(f"{where} is not a dict.")
    unknown = set(message) - _MESSAGE_KEYS
    if unknown:
        raise bad(f"{where} has unknown field(s) {', '.join(sorted(map(str, unknown)))}.")
    role = message.get("role")
    if role not in ROLES:
        raise bad(f"{where} has role {role!r}; expected one of system, user, assistant.")
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise bad(f"{where} ({role}) has no text content.")
    if "weight" in message and (role != "assistant" or message["weight"] not in (0, 1)):
        raise bad(f"{where}: weight must be 0 or 1, and only on assistant messages.")


# --- encoding ------------------------------------------------------------------------------


def encode_example(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, max_seq_len: int, *, index: int = 0
) -> EncodedExample:
    """Tokenize one conversation with the chat template; only answer tokens get labels.

    The template is rendered for growing prefixes of the conversation; the text each answer
    adds (its content and end-of-turn token) is labelled, everything else is context. Each
    piece is tokenized on its own, so labels line up with tokens exactly.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for position, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:position], True, index)
        full = _render(tokenizer, messages[: position + 1], False, index)
        if not (prompt.startswith(rendered) and full.startswith(prompt)):
            raise EngineError(
                f"Example at index {index}: the model's chat template rewrites earlier turns, "
                "so answer tokens cannot be located."
            )
        answer = full[len(prompt) :]
        body = answer.rstrip()  # the newline after the end-of-turn token is template glue
        _extend(tokenizer, input_ids, labels, prompt[len(rendered) :], train=False)
        _extend(tokenizer, input_ids, labels, body, train=bool(message.get("weight", 1)))
        _extend(tokenizer, input_ids, labels, answer[len(body) :], train=False)
        rendered = full
    truncated = len(input_ids) > max_seq_len
    encoded = EncodedExample(input_ids[:max_seq_len], labels[:max_seq_len], truncated)
    if encoded.n_label_tokens == 0:
        raise EngineError(
            f"Example at index {index}: no answer tokens fit in max_seq_len={max_seq_len}; "
            "raise max_seq_len or shorten the prompt."
        )
    return encoded


def _render(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, generation_prompt: bool, index: int
) -> str:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    try:
        return tokenizer.apply_chat_template(
            plain, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as exc:  # jinja templates raise their own errors ("roles must alternate")
        raise EngineError(f"Example at index {index}: the chat template refused it: {exc}") from exc


def _extend(
    tokenizer: PreTrainedTokenizerBase,
    input_ids: list[int],
    labels: list[int],
    text: str,
    *,
    train: bool,
) -> None:
    if not text:
        return
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    input_ids.extend(ids)
    labels.extend(ids if train else [IGNORE_INDEX] * len(ids))


def encode_examples(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[Mapping[str, Any]], max_seq_len: int
) -> list[EncodedExample]:
    """Validate and encode a whole dataset."""
    conversations = validate_examples(examples)
    return [
        encode_example(tokenizer, messages, max_seq_len, index=index)
        for index, messages in enumerate(conversations)
    ]


def estimate_tokens(
    tokenizer_path_or_tok: PreTrainedTokenizerBase | Path | str,
    examples: Sequence[Mapping[str, Any]],
    max_seq_len: int,
) -> int:
    """Training tokens per epoch (prompt and answer tokens after truncation)."""
    tokenizer = tokenizer_path_or_tok
    if isinstance(tokenizer, str | Path):
        from training.engine.loading import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    return sum(e.n_tokens for e in encode_examples(tokenizer, examples, max_seq_len))


# --- batching ------------------------------------------------------------------------------


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """Split example indices into batches of similar length, in a random batch order.

    Within a window of 16 batches, examples are sorted by length so padding stays small;
    the windows and the batch order are shuffled each call, so epochs differ.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 16
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
