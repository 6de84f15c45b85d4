"""Fuzz target: a TCP byte stream through ``read_framed_message``, each framed message then on through
the ``sip_message`` checks.

``EdgeTcpTransport._handle_connection`` catches ``FramingError`` (reported, connection closed; its
``MessageTooLarge`` gets a 513 first), ``IncompleteReadError`` and ``ConnectionError`` (peer went
away); anything else escapes the connection task. The stream is read without a size cap and with a
small one, so the guard's 513 path is reached by short inputs too. The reader is an
``asyncio.StreamReader`` with the limit ``asyncio.start_server`` gives it, fed the whole input and
then EOF, so a read can never wait for bytes that will not come.

Framing must also be exact: the messages handed on are consecutive pieces of the stream (only the
CRLF keep-alives between them skipped), never more bytes than were sent.
"""

from __future__ import annotations

import asyncio

from helpline.sbc_bridge.transport import FramingError, read_framed_message
from tests.fuzz import sip_message
from tests.fuzz.harness import Finding, fuzz

TARGET = "sip_stream"
MAX_LEN = 16384
STREAM_LIMIT = 2**16  # asyncio.start_server's default, which aiosipua's TCP transport keeps
SMALL_CAP = 2048

_loop = asyncio.new_event_loop()


async def _frames(data: bytes, max_bytes: int | None) -> list[bytes]:
    reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=_loop)
    reader.feed_data(data)
    reader.feed_eof()
    frames: list[bytes] = []
    try:
        while (message := await read_framed_message(reader, max_bytes)) is not None:
            frames.append(message)
    except (FramingError, asyncio.IncompleteReadError, ConnectionError):
        pass  # documented: the transport reports the framing error and closes the connection
    return frames


def check(data: bytes) -> None:
    """Frame ``data`` as one TCP connection and check every message it yields."""
    frames = _loop.run_until_complete(_frames(data, None))
    capped = _loop.run_until_complete(_frames(data, SMALL_CAP))
    if capped != frames[: len(capped)] or any(len(frame) > SMALL_CAP for frame in capped):
        raise Finding(f"the {SMALL_CAP}-byte cap changed the framing or let a larger message through")
    position = 0
    for frame in frames:
        found = data.find(frame, position)
        if found == -1 or data[position:found].strip(b"\r\n"):
            raise Finding(f"framed message at {position} is not the next piece of the stream")
        position = found + len(frame)
    for frame in frames:
        sip_message.check(frame)


if __name__ == "__main__":
    fuzz(TARGET, check, max_len=MAX_LEN, dictionaries=("common", "sip", "sdp"))
