"""Query parameters of the HTTP API, validated by pydantic; also their OpenAPI description."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from helpline.events.dispositions import Disposition
from helpline.store.agents import AgentEventFilters
from helpline.store.repository import MAX_LIMIT, CallFilters, SecurityEventFilters


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(50, ge=1, le=MAX_LIMIT, description=f"Page size, 1..{MAX_LIMIT}")
    cursor: str | None = Field(None, description="next_cursor of the previous page (opaque)")
    offset: int | None = Field(None, ge=0, description="Rows to skip; an alternative to cursor")


def _as_utc(value: datetime | None) -> datetime | None:
    """ISO 8601 times without an offset are taken as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class CallQuery(PageQuery):
    sip_call_id: str | None = Field(None, description="SIP Call-ID of the inbound leg, exact")
    caller: str | None = Field(None, description="Caller number, E.164, exact")
    did: str | None = Field(None, description="Dialled number, E.164, exact")
    trunk: str | None = Field(None, description="Trunk name")
    disposition: Disposition | None = None
    flow_id: str | None = None
    since: datetime | None = Field(None, description="Calls started at or after (ISO 8601; UTC if no offset)")
    until: datetime | None = Field(None, description="Calls started before (ISO 8601; UTC if no offset)")

    _utc = field_validator("since", "until")(_as_utc)

    def filters(self) -> CallFilters:
        return CallFilters(
            sip_call_id=self.sip_call_id, caller=self.caller, did=self.did, trunk=self.trunk,
            disposition=self.disposition.value if self.disposition else None,
            flow_id=self.flow_id, since=self.since, until=self.until,
        )  # fmt: skip


class SecurityEventQuery(PageQuery):
    type: str | None = Field(None, description="Full event type, e.g. security.blocked_country")
    source: str | None = Field(None, description="Source address as ip:port")
    transport: str | None = None
    since: datetime | None = Field(None, description="Events at or after (ISO 8601; UTC if no offset)")
    until: datetime | None = Field(None, description="Events before (ISO 8601; UTC if no offset)")

    _utc = field_validator("since", "until")(_as_utc)

    def filters(self) -> SecurityEventFilters:
        return SecurityEventFilters(
            type=self.type, source=self.source, transport=self.transport, since=self.since, until=self.until
        )


class AgentEventQuery(PageQuery):
    type: str | None = Field(None, description="Full event type, e.g. agent.presence")
    since: datetime | None = Field(None, description="Events at or after (ISO 8601; UTC if no offset)")
    until: datetime | None = Field(None, description="Events before (ISO 8601; UTC if no offset)")

    _utc = field_validator("since", "until")(_as_utc)

    def filters(self, extension: str) -> AgentEventFilters:
        return AgentEventFilters(extension=extension, type=self.type, since=self.since, until=self.until)


class KpiQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    since: datetime | None = Field(
        None, description="Window start (ISO 8601; UTC if no offset); default: until - 24 h"
    )
    until: datetime | None = Field(
        None, description="Window end, exclusive (ISO 8601; UTC if no offset); default: now"
    )

    _utc = field_validator("since", "until")(_as_utc)


class RoutingQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str | None = Field(
        None, description="Extension: explain, decision by decision, why it was not chosen"
    )
