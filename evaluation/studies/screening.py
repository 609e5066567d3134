"""Blinding screen: find text in an output that could tell a rater which model wrote it.

Model-free on purpose (plain strings in, matches out) so it is cheap to test on its own.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Vendors, model families and the stock phrases that give a model away. Word boundaries
# keep "GPT" from matching inside other words.
VENDOR_PATTERNS = [
    r"smol\s*lm\w*",
    r"\w*gpt[\w.-]*",
    r"open\s*ai",
    r"llama(?:[-\s]?\d[\w.]*)?(?![a-z])",  # "Llama 3.1", "LLaMA-2"; not "llamas"
    r"hugging\s*face",
    r"anthropic",
    r"claude",
    r"gemini",
    r"gemma",
    r"mistral",
    r"mixtral",
    r"qwen[\w.-]*",
    r"deepseek",
    r"meta\s+ai",
    r"google\s+(?:ai|deepmind|bard)",
    r"transformers?\s+library",
    r"as an ai(?:\s+language)?\s+model",
    r"i(?:\s+am|'m)\s+an?\s+(?:ai|artificial intelligence|language model|large language model)",
    r"(?:large\s+)?language\s+model",
    r"\bllm\b",
]
_VENDOR_RE = re.compile(r"\b(?:" + "|".join(VENDOR_PATTERNS) + r")", re.IGNORECASE)
MIN_TERM_CHARS = 3
# Characters that render as nothing: a model name with one inside ("Gem\u200bini") reads
# as the name to a rater but would slip past a plain match.
_INVISIBLE = dict.fromkeys(
    [0x00AD, 0x034F, 0x061C, 0x180E, *range(0x200B, 0x2010), *range(0x202A, 0x202F),
     *range(0x2060, 0x2070), 0xFEFF]
)


def normalise(text: str) -> str:
    """What a reader sees, for matching: NFKC folds full-width and other compatibility
    spellings ("ＧＰＴ" → "GPT"), and invisible characters are dropped."""
    return unicodedata.normalize("NFKC", text or "").translate(_INVISIBLE)


def study_terms(names: Iterable[str]) -> list[str]:
    """Names particular to a study (model versions, base models, model ids, size tags):
    each whole name, plus its distinctive pieces (``SmolLM2-135M-Instruct`` → ``135M``)."""
    terms: set[str] = set()
    for name in names:
        name = normalise(name).strip()
        if len(name) < MIN_TERM_CHARS:
            continue
        terms.add(name)
        for piece in re.split(r"[\s/·:#()]+", name):
            # Pieces that carry a digit ("135M", "v2-ft") are identifying; plain words
            # ("base", "model") are not and would flag half the outputs.
            if len(piece) >= MIN_TERM_CHARS and re.search(r"\d", piece):
                terms.add(piece)
    return sorted(terms, key=len, reverse=True)


def find_identifying(text: str, extra_terms: Iterable[str] = ()) -> list[str]:
    """The distinct phrases in ``text`` that name a model, a vendor or an AI persona,
    in order of first appearance. An empty output is reported too: it cannot be rated.
    Matching runs on normalised text (see :func:`normalise`), so full-width and zero-width
    spellings of a name are found too."""
    text = normalise(text)
    if not text.strip():
        return ["(empty output)"]
    found: dict[str, None] = {}
    for match in _VENDOR_RE.finditer(text):
        found.setdefault(match.group(0).strip(), None)
    for term in extra_terms:
        term = normalise(term)
        if not term:
            continue
        pattern = r"(?<!\w)" + re.escape(term) + r"(?!\w)"
        for match in re.finditer(pattern, text, re.IGNORECASE):
            found.setdefault(match.group(0), None)
    return list(found)
