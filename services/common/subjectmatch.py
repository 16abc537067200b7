"""NATS subject matching as nats-server applies permissions: does a pattern cover a subject?

Used to render and test the permission table (services/common/permissions.py) without a server;
the integration tests check the same rows against a real one.
"""

from __future__ import annotations

from typing import Iterable


def covers(pattern: str, subject: str) -> bool:
    """True when every subject `subject` can stand for (it may hold wildcards, as a
    subscription does) is matched by `pattern` (a pattern's ` <queue>` suffix, which limits a
    subscription to that queue group, is not part of the subject)."""
    p, s = pattern.split(" ")[0].split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if s[i] == ">":
            return False
        if token != "*" and token != s[i]:
            return False
    return len(s) == len(p)


def allowed(subject: str, allow: Iterable[str], deny: Iterable[str] = ()) -> bool:
    """Allowed by one allow pattern and not matched by a deny pattern (publish and subscribe
    alike, for the subjects the table shows)."""
    return any(covers(p, subject) for p in allow) and not any(covers(p, subject) for p in deny)
