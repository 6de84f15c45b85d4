"""Business-hours schedules for ``check_hours``: weekly hours, holidays and closed overrides."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

HoursOutcome = Literal["open", "closed", "holiday"]


def check_timezone(name: str) -> str:
    """Reject names the tz database does not know, so a typo fails at load time, not mid-call."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {name!r}") from None
    return name


def _minutes(hours: str, minutes: str) -> int:
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > 24 * 60:
        raise ValueError(f"bad time {hours}:{minutes}")
    return value


def parse_range(text: str) -> tuple[int, int]:
    """``"09:00-17:30"`` as minutes since midnight; the end may be ``24:00``."""
    match = _RANGE.match(text)
    if not match:
        raise ValueError(f"hours must look like 09:00-17:00, got {text!r}")
    start, end = _minutes(*match.group(1, 2)), _minutes(*match.group(3, 4))
    if end <= start:
        raise ValueError(f"range {text!r} ends before it starts (split ranges that cross midnight)")
    return start, end


class ClosedPeriod(BaseModel):
    """A one-off closure in the schedule's local time, e.g. a staff meeting or an outage."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: datetime
    end: datetime
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> ClosedPeriod:
        if self.end <= self.start:
            raise ValueError("closed period ends before it starts")
        return self


class Schedule(BaseModel):
    """Weekly opening hours in ``timezone`` (defaults to the flow's), with holidays and closures."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    timezone: str | None = None
    weekly: dict[Day, list[str]] = Field(
        default_factory=dict
    )
    holidays: list[date] = Field(default_factory=list)
    closed: list[ClosedPeriod] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)

    @field_validator("weekly")
    @classmethod
    def _ranges(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for ranges in value.values():
            for text in ranges:
                parse_range(text)
        return value

    def evaluate(self, now: datetime, default_tz: str) -> HoursOutcome:
        """Holiday wins over closures, closures over weekly hours."""
        local = now.astimezone(ZoneInfo(self.timezone or default_tz))
        if local.date() in self.holidays:
            return "holiday"
        naive = local.replace(tzinfo=None)
        for period in self.closed:
            start = period.start.replace(tzinfo=None) if period.start.tzinfo is None else (
                period.start.astimezone(local.tzinfo).replace(tzinfo=None))
            end = period.end.replace(tzinfo=None) if period.end.tzinfo is None else (
                period.end.astimezone(local.tzinfo).replace(tzinfo=None))
            if start <= naive < end:
                return "closed"
        minute = local.hour * 60 + local.minute
        for text in self.weekly.get(DAYS[local.weekday()], []):
            start_min, end_min = parse_range(text)
            if start_min <= minute < end_min:
                return "open"
        return "closed"
