"""Failed digest answers, counted per source and per user in sliding windows (A4).

A password cracker works one of two ways: many guesses from one address (the source is banned after
``ban_after_failures``) or a few guesses from each of many addresses at one user (the user is locked
after ``lock_after_failures`` from anywhere). Success resets nothing: the windows just slide, so an
attacker who also knows one valid password cannot wipe its own record.
"""

from __future__ import annotations

from dataclasses import dataclass

from .settings import SecuritySettings
from .windows import ThresholdWindow


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    """What one more failure crossed: the source's threshold, the user's threshold, or neither."""

    ban_source: bool
    lock_user: bool


class AuthFailures:
    """The two windows; both are bounded LRUs of ``max_tracked_sources`` keys."""

    def __init__(self, settings: SecuritySettings) -> None:
        window = settings.failure_window_s
        capacity = settings.max_tracked_sources
        self.by_source = ThresholdWindow(settings.ban_after_failures, window, capacity)
        self.by_user = ThresholdWindow(settings.lock_after_failures, window, capacity)

    def record(self, source: str | None, user: str | None, now: float) -> FailureOutcome:
        """Count one failure; ``source`` None for a source that is never banned (trusted)."""
        ban = source is not None and self.by_source.hit(source, now)
        lock = bool(user) and self.by_user.hit(user or "", now)
        return FailureOutcome(ban, lock)
