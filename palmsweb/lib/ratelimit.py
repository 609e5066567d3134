"""A fixed-window failure counter on the Django cache (login attempts)."""

from __future__ import annotations

import hashlib

from django.core.cache import cache


def _key(scope: str, ident: str) -> str:
    digest = hashlib.sha256(ident.encode()).hexdigest()[:32]
    return f"ratelimit:{scope}:{digest}"


def is_limited(scope: str, ident: str, *, limit: int) -> bool:
    return cache.get(_key(scope, ident), 0) >= limit


def record_failure(scope: str, ident: str, *, window_seconds: int) -> int:
    key = _key(scope, ident)
    if cache.add(key, 1, timeout=window_seconds):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window_seconds)
        return 1


def reset(scope: str, ident: str) -> None:
    cache.delete(_key(scope, ident))
