"""``/api/recordings``, ``/api/erasure`` and ``/api/retention-policies``: what reviewers do with
recordings, each action checked against the caller's role and written to the audit log once.

Playing is two steps. ``POST /api/recordings/{id}/play {"start", "end"}`` is the audited act: it
returns a ticket bound to the user, the recording and the bytes of that time range. The ``<audio>``
element then fetches ``/audio?ticket=...`` with as many Range requests as it likes; real samples leave
the server only inside the ticket's window (and the 44-byte WAV header). Bytes outside it are sent as
silence, so the file keeps its length and the timeline its meaning, while the audio itself stays home.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from helpline.events.dispositions import Disposition
from helpline.recording.library import (
    AudioSource,
    AudioUnavailable,
    DeletionRefused,
    HoldConflict,
    LibraryError,
    RecordingGone,
    RecordingLibrary,
    RecordingMissing,
    RecordingNotReady,
    download_name,
)
from helpline.recording.retention import erase_phone
from helpline.store.recordings import (
    ConsentRow,
    RecordingFilters,
    RecordingRow,
    RetentionPolicyError,
    RetentionRow,
)
from helpline.web.auth import audit, current_user, require_role
from helpline.web.byte_ranges import ByteRange, InvalidRange, RangeNotSatisfiable, parse_range
from helpline.web.errors import ApiError
from helpline.web.parsing import json_response, paged, parse_body, parse_query
from helpline.web.play_tickets import WAV_HEADER_BYTES, ByteWindow, PlayTickets, TicketRefused
from helpline.web.queries import PageQuery, _as_utc

logger = logging.getLogger(__name__)

REVIEW_ROLES = ("admin", "compliance")
"""Recordings list/view/play, download, export, hold, delete, erasure."""
POLICY_WRITE_ROLES = ("admin",)
STREAM_BLOCK = 64 * 1024
EXPORT_LIMIT = 2000  # recordings in one zip from the API; the command line has no such limit
WAV_MEDIA_TYPE = "audio/wav"


class RecordingQuery(PageQuery):
    caller: str | None = Field(None, description="Caller number (ANI), E.164, exact")
    did: str | None = Field(None, description="Dialled number (DNIS), E.164, exact")
    agent: str | None = Field(None, description="Agent extension, exact")
    queue: str | None = None
    disposition: Disposition | None = None
    consent: str | None = Field(None, description="Consent outcome: granted, denied, no_response, withdrawn")
    status: str | None = Field(None, description="stored, recovered, deleted, erased, recording")
    call_id: str | None = None
    since: datetime | None = Field(None, description="Started at or after (ISO 8601; UTC if no offset)")
    until: datetime | None = Field(None, description="Started before (ISO 8601; UTC if no offset)")

    _utc = field_validator("since", "until")(_as_utc)

    def filters(self) -> RecordingFilters:
        return RecordingFilters(
            caller=self.caller, did=self.did, agent=self.agent, queue=self.queue,
            disposition=self.disposition.value if self.disposition else None, consent=self.consent,
            status=self.status, call_id=self.call_id, since=self.since, until=self.until,
        )  # fmt: skip


class RecordingOut(BaseModel):
    recording: RecordingRow
    consent: list[ConsentRow] = Field(description="The call's consent evidence, oldest first")
    can_download: bool = Field(description="Whether the signed-in user may download and export")


class PlayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: float = Field(ge=0, description="Seconds from the start of the recording")
    end: float = Field(gt=0, description="Seconds from the start of the recording; after start")


class PlayTicketOut(BaseModel):
    ticket: str
    audio_url: str
    start: float
    end: float
    expires_in: float = Field(description="Seconds the ticket stays valid")


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500, description="Why (kept with the hold or the receipt)")


class ExportSearch(BaseModel):
    """The search whose result is exported (the same filters as ``GET /api/recordings``)."""

    model_config = ConfigDict(extra="forbid")
    caller: str | None = None
    did: str | None = None
    agent: str | None = None
    queue: str | None = None
    disposition: Disposition | None = None
    consent: str | None = None
    call_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    _utc = field_validator("since", "until")(_as_utc)

    def filters(self) -> RecordingFilters:
        values = self.model_dump()
        values["disposition"] = self.disposition.value if self.disposition else None
        return RecordingFilters(**values)


class ExportRequest(BaseModel):
    """Exactly one of: ``ids`` (a call's or a hand-picked set), ``search`` (a search result), or
    ``all: true`` (everything whose media still exists). At most ``EXPORT_LIMIT`` recordings."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(None, min_length=1, max_length=EXPORT_LIMIT,
                                  description="Recording ids to export")
    search: ExportSearch | None = Field(None, description="Export every recording this search finds")
    all: bool = Field(False, description="Export every recording whose media still exists")

    @model_validator(mode="after")
    def _one_selection(self) -> ExportRequest:
        chosen = [name for name, given in (("ids", self.ids is not None), ("search", self.search is not None),
                                            ("all", self.all)) if given]
        if len(chosen) != 1:
            raise ValueError("give exactly one of ids, search or all (got "
                             f"{', '.join(chosen) or 'none'})")
        return self


class ErasureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone: str = Field(min_length=3, max_length=32, pattern=r"^\+?[0-9]+$", description="E.164 number")


class RetentionChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: int = Field(ge=1, le=36500, description="Days recordings are kept; never below the floor")


class RetentionList(BaseModel):
    """``GET /api/retention-policies`` (the schema the OpenAPI document names)."""

    items: list[RetentionRow]


class ErasureKept(BaseModel):
    recording_id: str
    reason: str = Field(description="Why it stays: a legal hold or the retention floor")
    until: str | None = Field(description="When the floor ends (ISO 8601), when that is the reason")


class ErasureFailed(BaseModel):
    recording_id: str
    reason: str


class ErasureReport(BaseModel):
    """``POST /api/erasure``: the shape of ``RetentionReport.as_dict()``, for the OpenAPI document."""

    deleted: list[str] = Field(description="Recordings whose media was deleted (receipts remain)")
    kept: list[ErasureKept]
    failed: list[ErasureFailed]
    notes: list[str]


def _api_error(exc: LibraryError) -> ApiError:
    if isinstance(exc, RecordingMissing):
        return ApiError(404, exc.message, "id")
    if isinstance(exc, RecordingGone):
        return ApiError(410, exc.message, "id")
    if isinstance(exc, RecordingNotReady | DeletionRefused | HoldConflict):
        return ApiError(409, exc.message, "id")
    if isinstance(exc, AudioUnavailable):
        return ApiError(503, exc.message)
    return ApiError(422, exc.message)


def _masked_chunk(data: bytes, at: int, window: ByteWindow) -> bytes:
    """``data`` read from offset ``at`` with every byte outside the header and ``window`` zeroed."""
    end = at + len(data)
    out = bytearray(len(data))
    for lo, hi in ((0, WAV_HEADER_BYTES), (window.first, window.end)):
        a, b = max(lo, at), min(hi, end)
        if a < b:
            out[a - at : b - at] = data[a - at : b - at]
    return bytes(out)


async def _stream(source: AudioSource, span: ByteRange, window: ByteWindow | None) -> AsyncIterator[bytes]:
    """Bytes ``span`` of ``source``; with a ``window``, real audio only inside it. Closes ``source``."""
    try:
        at = span.first
        while at <= span.last:
            length = min(STREAM_BLOCK, span.last + 1 - at)
            if window is not None and not window.overlaps(at, at + length):
                data = bytes(length)  # wholly outside the window: nothing is read
            else:
                data = await source.read(at, length)
                if len(data) != length:
                    raise OSError(f"{source.name}: short read at {at} ({len(data)} of {length} bytes)")
                if window is not None:
                    data = _masked_chunk(data, at, window)
            yield data
            at += length
    finally:
        await source.aclose()


def _byte_response(
    request: Request, source: AudioSource, window: ByteWindow | None, headers: dict[str, str]
) -> Response:
    """200 or 206 with the bytes the Range header asks for; 416 when none lie within the file."""
    size = source.size
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store", **headers}
    header = request.headers.get("range")
    span, status = ByteRange(0, size - 1), 200
    if header is not None:
        try:
            span, status = parse_range(header, size), 206
        except InvalidRange:
            logger.info("ignoring a malformed Range header %r", header)
        except RangeNotSatisfiable:
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"},
                            background=BackgroundTask(source.aclose))  # fmt: skip
    headers["Content-Length"] = str(span.length)
    if status == 206:
        headers["Content-Range"] = span.content_range(size)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=WAV_MEDIA_TYPE,
                        background=BackgroundTask(source.aclose))  # fmt: skip
    return StreamingResponse(_stream(source, span, window), status, headers, media_type=WAV_MEDIA_TYPE)


class RecordingRoutes:
    """Handlers of the recording endpoints; one ticket book per app."""

    def __init__(self, library: RecordingLibrary, tickets: PlayTickets | None = None) -> None:
        self.library = library
        self.store = library.store
        self.tickets = tickets or PlayTickets()

    def routes(self) -> list[Route]:
        return [
            Route("/api/recordings", self.list_recordings, methods=["GET"]),
            Route("/api/recordings/export", self.export, methods=["POST"]),
            Route("/api/recordings/{id}", self.view, methods=["GET"]),
            Route("/api/recordings/{id}", self.delete, methods=["DELETE"]),
            Route("/api/recordings/{id}/peaks", self.peaks, methods=["GET"]),
            Route("/api/recordings/{id}/play", self.play, methods=["POST"]),
            Route("/api/recordings/{id}/audio", self.audio, methods=["GET", "HEAD"]),
            Route("/api/recordings/{id}/integrity", self.integrity, methods=["GET"]),
            Route("/api/recordings/{id}/download", self.download, methods=["GET"]),
            Route("/api/recordings/{id}/hold", self.hold, methods=["PUT"]),
            Route("/api/recordings/{id}/hold", self.release, methods=["DELETE"]),
            Route("/api/erasure", self.erase, methods=["POST"]),
            Route("/api/retention-policies", self.list_policies, methods=["GET"]),
            Route("/api/retention-policies/{name}", self.get_policy, methods=["GET"]),
            Route("/api/retention-policies/{name}", self.set_policy, methods=["PUT"]),
        ]

    # ---- reading ------------------------------------------------------------------------------------
    async def list_recordings(self, request: Request) -> Response:
        await require_role(request, *REVIEW_ROLES)
        query = parse_query(request, RecordingQuery)
        response = await paged(self.library.search, query.filters(), query)
        detail = query.model_dump(mode="json", exclude_none=True, exclude={"limit"})
        await audit(request, "list", target_type="recording", detail=detail)
        return response

    async def view(self, request: Request) -> Response:
        user = await require_role(request, *REVIEW_ROLES)
        recording_id = request.path_params["id"]
        try:
            found = await self.library.get(recording_id)
        except LibraryError as exc:
            raise _api_error(exc) from None
        await audit(request, "view", target_type="recording", target_id=recording_id)
        out = RecordingOut(recording=found.recording, consent=found.consent,
                           can_download=user.role in REVIEW_ROLES)  # fmt: skip
        return json_response(out)

    async def peaks(self, request: Request) -> Response:
        await require_role(request, *REVIEW_ROLES)
        try:
            peaks = await self.library.peaks(request.path_params["id"])
        except LibraryError as exc:
            raise _api_error(exc) from None
        return Response(_json_bytes(peaks), media_type="application/json",
                        headers={"Cache-Control": "private, max-age=300"})  # fmt: skip

    async def integrity(self, request: Request) -> Response:
        await require_role(request, *REVIEW_ROLES)
        try:
            verdict = await self.library.integrity(request.path_params["id"])
        except LibraryError as exc:
            raise _api_error(exc) from None
        return Response(_json_bytes(verdict.to_dict()), media_type="application/json",
                        headers={"Cache-Control": "no-store"})  # fmt: skip

    # ---- playing ------------------------------------------------------------------------------------
    async def play(self, request: Request) -> Response:
        user = await require_role(request, *REVIEW_ROLES)
        recording_id = request.path_params["id"]
        body = await parse_body(request, PlayRequest)
        try:
            row = await self.library.row(recording_id)
            source = await self.library.open_audio(recording_id)
        except LibraryError as exc:
            raise _api_error(exc) from None
        size = source.size
        await source.aclose()
        duration = row.duration_s or 0.0
        if body.start >= duration:
            raise ApiError(422, f"start must be before the end of the recording ({duration:.2f} s)", "start")
        if body.end <= body.start:
            raise ApiError(422, "end must be after start", "end")
        end = min(body.end, duration)
        ticket = self.tickets.issue(user.username, recording_id, body.start, end, size)
        await audit(request, "play", target_type="recording", target_id=recording_id,
                    detail={"start": body.start, "end": end})  # fmt: skip
        out = PlayTicketOut(
            ticket=ticket.token, audio_url=f"/api/recordings/{recording_id}/audio?ticket={ticket.token}",
            start=body.start, end=end, expires_in=self.tickets.ttl_s,
        )  # fmt: skip
        return json_response(out)

    async def audio(self, request: Request) -> Response:
        """The WAV under a play ticket. The ticket was audited when issued; fetches are not."""
        user = current_user(request)
        recording_id = request.path_params["id"]
        token = request.query_params.get("ticket")
        if not token:
            raise ApiError(403, "a play ticket is required (POST .../play)", "ticket")
        try:
            ticket = self.tickets.check(token, user.username, recording_id)
        except TicketRefused as exc:
            raise ApiError(403, str(exc), "ticket") from None
        try:
            source = await self.library.open_audio(recording_id)
        except LibraryError as exc:
            raise _api_error(exc) from None
        return _byte_response(request, source, ticket.window, {})

    async def download(self, request: Request) -> Response:
        await require_role(request, *REVIEW_ROLES)
        recording_id = request.path_params["id"]
        try:
            row = await self.library.row(recording_id)
            source = await self.library.open_audio(recording_id)
        except LibraryError as exc:
            raise _api_error(exc) from None
        await audit(request, "download", target_type="recording", target_id=recording_id,
                    detail={"bytes": source.size})  # fmt: skip
        disposition = {"Content-Disposition": f'attachment; filename="{download_name(row)}"'}
        return _byte_response(request, source, None, disposition)

    async def export(self, request: Request) -> Response:
        await require_role(request, *REVIEW_ROLES)
        body = await parse_body(request, ExportRequest)
        try:
            if body.ids is not None:
                ids = body.ids
            else:
                filters = body.search.filters() if body.search is not None else RecordingFilters()
                ids = await self.library.exportable_ids(filters, limit=EXPORT_LIMIT)
                if not ids:
                    raise ApiError(404, "no stored recording matches", "search" if body.search else "all")
        except LibraryError as exc:
            raise ApiError(413, exc.message, "search" if body.search else "all") from None
        workdir = Path(tempfile.mkdtemp(prefix="helpline-export-"))
        out = workdir / f"recordings-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.zip"
        try:
            await self.library.export(ids, out)
        except LibraryError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise _api_error(exc) from None
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        selection: dict[str, Any] = {"ids": ids}
        if body.search is not None:
            selection["search"] = body.search.model_dump(mode="json", exclude_none=True)
        await audit(request, "export", target_type="recording", target_id=ids[0] if len(ids) == 1 else None,
                    detail={**selection, "all": body.all})  # fmt: skip
        return FileResponse(out, media_type="application/zip", filename=out.name,
                            background=BackgroundTask(shutil.rmtree, workdir, True))  # fmt: skip

    # ---- changing -----------------------------------------------------------------------------------
    async def hold(self, request: Request) -> Response:
        user = await require_role(request, *REVIEW_ROLES)
        recording_id = request.path_params["id"]
        body = await parse_body(request, ReasonBody)
        try:
            row = await self.library.hold(recording_id, user.username, body.reason)
        except LibraryError as exc:
            raise _api_error(exc) from None
        await audit(request, "hold", target_type="recording", target_id=recording_id,
                    detail={"reason": body.reason})  # fmt: skip
        return json_response(row)

    async def release(self, request: Request) -> Response:
        user = await require_role(request, *REVIEW_ROLES)
        recording_id = request.path_params["id"]
        try:
            before = await self.library.row(recording_id)
            row = await self.library.release(recording_id, user.username)
        except LibraryError as exc:
            raise _api_error(exc) from None
        await audit(request, "release", target_type="recording", target_id=recording_id,
                    detail={"hold": before.legal_hold or {}})  # fmt: skip
        return json_response(row)

    async def delete(self, request: Request) -> Response:
        """``DELETE /api/recordings/{id}`` with ``{"reason": ...}`` (or ``?reason=``)."""
        user = await require_role(request, *REVIEW_ROLES)
        recording_id = request.path_params["id"]
        reason = request.query_params.get("reason")
        if reason is None:
            reason = (await parse_body(request, ReasonBody)).reason
        elif not reason.strip():
            raise ApiError(422, "a reason is required", "reason")
        try:
            row = await self.library.delete(recording_id, user.username, reason)
        except DeletionRefused as exc:
            await audit(request, "delete", target_type="recording", target_id=recording_id, outcome="denied",
                        detail={"reason": reason, "refused": exc.message})  # fmt: skip
            raise _api_error(exc) from None
        except LibraryError as exc:
            raise _api_error(exc) from None
        receipt = (row.deletion or {}).get("ledger_seq")
        await audit(request, "delete", target_type="recording", target_id=recording_id,
                    detail={"reason": reason, "ledger_seq": receipt})  # fmt: skip
        return json_response(row)

    async def erase(self, request: Request) -> Response:
        """A data subject's erasure request by phone number: what went and what stays, and why."""
        user = await require_role(request, *REVIEW_ROLES)
        body = await parse_body(request, ErasureRequest)
        report = await erase_phone(self.store, self.library, body.phone, actor=user.username)
        result = report.as_dict()
        await audit(request, "erase", target_type="phone", target_id=body.phone,
                    detail={"deleted": result["deleted"], "kept": [k["recording_id"] for k in result["kept"]],
                            "failed": [f["recording_id"] for f in result["failed"]]})  # fmt: skip
        return Response(_json_bytes(result), media_type="application/json")

    # ---- retention policies -------------------------------------------------------------------------
    async def list_policies(self, request: Request) -> Response:
        await require_role(request, *REVIEW_ROLES)
        policies = await self.store.retention.list()
        return Response(_json_bytes({"items": [p.model_dump(mode="json") for p in policies]}),
                        media_type="application/json")  # fmt: skip

    async def get_policy(self, request: Request) -> Response:
        await require_role(request, *REVIEW_ROLES)
        policy = await self.store.retention.get(request.path_params["name"])
        if policy is None:
            raise ApiError(404, "no such retention policy", "name")
        return json_response(policy)

    async def set_policy(self, request: Request) -> Response:
        user = await require_role(request, *POLICY_WRITE_ROLES)
        name = request.path_params["name"]
        body = await parse_body(request, RetentionChange)
        before = await self.store.retention.get(name)
        try:
            policy = await self.store.retention.set_days(name, body.days, user.username, datetime.now(UTC))
        except RetentionPolicyError as exc:
            status = 404 if exc.field == "name" else 422
            await audit(request, "retention_change", target_type="retention_policy", target_id=name,
                        outcome="denied", detail={"days": body.days, "refused": exc.message})  # fmt: skip
            raise ApiError(status, exc.message, exc.field) from None
        await audit(request, "retention_change", target_type="retention_policy", target_id=name,
                    detail={"days": body.days, "was": before.days if before else None})  # fmt: skip
        return json_response(policy)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def recording_routes(library: RecordingLibrary, tickets: PlayTickets | None = None) -> list[Route]:
    """The recording API's routes, for ``create_app``."""
    return RecordingRoutes(library, tickets).routes()
