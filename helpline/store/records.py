"""What the read side hands out: immutable pydantic records, also the API's response schemas.

They are separate from the ORM classes so a caller can never lazy-load or mutate a row by accident.
Times serialise as ISO 8601 UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from helpline.queue.profile import AgentProfile, AttributeValue, Membership

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


class AgentEventRecord(_Record):
    """One call-less ``agent.*`` event (presence, reachability...)."""

    id: int
    at: datetime
    type: str
    extension: str | None
    data: dict[str, Any]


class AgentRecord(_Record):
    """An agent as stored, without its credentials: what the API shows."""

    extension: str
    display_name: str
    skills: dict[str, int]
    attributes: dict[str, AttributeValue]
    queues: tuple[Membership, ...] = Field(description="Queue memberships; tier 1 is offered calls first")
    wrapup_s: float | None = Field(description="Wrap-up after each call; null: the queue's")
    enabled: bool
    realm: str = Field(description="Digest realm the stored password hashes belong to")
    created_at: datetime
    updated_at: datetime

    def profile(self) -> AgentProfile:
        """The validated configuration part (what the routing engine takes)."""
        return AgentProfile(
            extension=self.extension, display_name=self.display_name, skills=self.skills,
            attributes=self.attributes, queues=self.queues, wrapup_s=self.wrapup_s, enabled=self.enabled,
        )  # fmt: skip


class StoredAgent(AgentRecord):
    """An agent with its digest HA1s: what the registrar needs. Never sent over the API."""

    ha1_md5: str
    ha1_sha256: str

    def public(self) -> AgentRecord:
        """The same agent without its credentials."""
        return AgentRecord.model_validate(self.model_dump(exclude={"ha1_md5", "ha1_sha256"}))


class Page(BaseModel, Generic[T]):
    """A page of results, newest first; pass ``next_cursor`` back to get the next one."""

    model_config = ConfigDict(frozen=True)

    items: list[T]
    next_cursor: str | None = Field(description="Opaque; null on the last page")
