"""State that is neither chunks nor cache: API keys, the audit trail and rate limits (and, next,
feedback, reviews and curated answers), in one SQL database migrated at start-up.

    db = StateDB.from_settings(settings); db.migrate()
    keys, audit = KeyStore(db), Audit(db)
"""

from __future__ import annotations

from .audit import Audit, AuditEvent, InvalidAudit
from .db import StateDB, StateError, StateUnavailable
from .keys import DuplicateKeyName, Identity, InvalidKey, InvalidScope, KeyRecord, KeyStore, Scope, UnknownKey
from .ratelimit import (
    Decision,
    LocalRateLimiter,
    RateLimiter,
    RateLimitUnavailable,
    RedisRateLimiter,
    make_rate_limiter,
)

__all__ = [
    "Audit",
    "AuditEvent",
    "Decision",
    "DuplicateKeyName",
    "Identity",
    "InvalidAudit",
    "InvalidKey",
    "InvalidScope",
    "KeyRecord",
    "KeyStore",
    "LocalRateLimiter",
    "RateLimitUnavailable",
    "RateLimiter",
    "RedisRateLimiter",
    "Scope",
    "StateDB",
    "StateError",
    "StateUnavailable",
    "UnknownKey",
    "make_rate_limiter",
]
