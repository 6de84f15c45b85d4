"""What the read side hands out: immutable pydantic records, also the API's response schemas.

They are separate from the ORM classes so a caller can never lazy-load or mutate a row by accident.
Times serialise as ISO 8601 UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T", bound=BaseModel)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class CallRecord(_Record):
    """One call's CDR."""

    id: str = Field(description="Helpline call id (uuid4 hex)")
    sip_call_id: str | None
    trunk: str | None
    caller: str | None = Field(description="Caller number, E.164")
    caller_name: str | None
    did: str | None = Field(description="Dialled number, E.164")
    pai: str | None
    verstat: str | None
    source: str | None = Field(description="Signalling source as ip:port")
    transport: str | None
    codec: str | None
    flow_id: str | None
    flow_version: str | None
    disposition: str | None = Field(description="How the call ended; null while it is ringing")
    sip_code: int | None
    end_reason: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None


class CallEventRecord(_Record):
    """One entry of a call's event log."""

    seq: int = Field(description="Position in the call's event log, from 1")
    at: datetime
    type: str
    node_id: str | None
    data: dict[str, Any]


class CallDetail(CallRecord):
    """A CDR with its full event log in order."""

    events: list[CallEventRecord]


class SecurityEventRecord(_Record):
    id: int
    at: datetime
    type: str
    source: str | None
    transport: str | None
    data: dict[str, Any]


class Page(BaseModel, Generic[T]):
    """A page of results, newest first; pass ``next_cursor`` back to get the next one."""

    model_config = ConfigDict(frozen=True)

    items: list[T]
    next_cursor: str | None = Field(description="Opaque; null on the last page")
