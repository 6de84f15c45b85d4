"""OPTIONS qualify: is each registered contact still answering?

A registration says where an agent was, not that it is still there (a laptop closed, a NAT binding
gone). Each contact gets an OPTIONS right after it registers and then every ``qualify_interval_s``;
``qualify_failures`` missed answers in a row mark it unreachable, any answer marks it reachable
again with its round-trip time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiosipua.message import SipRequest
from aiosipua.utils import format_addr, generate_tag

from .binding import Binding
from .registrar import Registrar
from .settings import AgentEdgeSettings
from .wire import AgentWire

logger = logging.getLogger(__name__)

_Key = tuple[str, str]


def options_request(wire: AgentWire, binding: Binding) -> SipRequest:
    """An out-of-dialog OPTIONS to ``binding``'s contact."""
    request = SipRequest(method="OPTIONS", uri=binding.contact)
    request.headers.append("Via", wire.via())
    request.headers.set_single("From", f"<sip:{format_addr(*wire.advertised)}>;tag={generate_tag()}")
    request.headers.set_single("To", f"<{wire.host_uri(binding.extension)}>")
    request.headers.set_single("Call-ID", f"{generate_tag()}{generate_tag()}")
    request.headers.set_single("CSeq", "1 OPTIONS")
    request.headers.set_single("Max-Forwards", "70")
    request.headers.set_single("Accept", "application/sdp")
    if wire.user_agent:
        request.headers.set_single("User-Agent", wire.user_agent)
    return request


class Qualifier:
    """One qualify loop per binding, started and stopped as bindings come and go."""

    def __init__(
        self, settings: AgentEdgeSettings, registrar: Registrar, wire_for: Callable[[str], AgentWire | None]
    ) -> None:
        self.settings = settings
        self._registrar = registrar
        self._wire_for = wire_for
        self._loops: dict[_Key, asyncio.Task[None]] = {}

    def watch(self, binding: Binding) -> None:
        key = (binding.extension, binding.contact)
        if key in self._loops:
            return
        task = asyncio.get_running_loop().create_task(self._loop(key))
        self._loops[key] = task
        task.add_done_callback(lambda t, k=key: self._done(k, t))  # type: ignore[misc]

    def _done(self, key: _Key, task: asyncio.Task[None]) -> None:
        if self._loops.get(key) is task:
            del self._loops[key]
        if not task.cancelled() and task.exception() is not None:
            logger.error("qualify loop for %s failed", key[0], exc_info=task.exception())

    def unwatch(self, binding: Binding) -> None:
        task = self._loops.pop((binding.extension, binding.contact), None)
        if task is not None:
            task.cancel()

    async def _loop(self, key: _Key) -> None:
        misses = 0
        while True:
            binding = self._registrar.get(*key)
            if binding is None:
                return
            rtt_ms = await self.ping(binding)
            if rtt_ms is None:
                misses += 1
                logger.info("qualify: %s at %s did not answer (%d)", key[0], key[1], misses)
                if misses >= self.settings.qualify_failures:
                    self._registrar.set_reachability(*key, False, None)
            else:
                misses = 0
                self._registrar.set_reachability(*key, True, rtt_ms)
            await asyncio.sleep(self.settings.qualify_interval_s)

    async def ping(self, binding: Binding) -> float | None:
        """Round-trip time in ms of one OPTIONS to ``binding``, None without an answer in time."""
        wire = self._wire_for(binding.transport)
        if wire is None:
            return None
        request = options_request(wire, binding)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.qualify_timeout_s):
                destination = await wire.reach(binding.source, binding.contact)
                response = await wire.requests.send(request, destination)
        except TimeoutError:
            return None
        except (OSError, RuntimeError) as exc:
            logger.info("qualify: cannot reach %s: %s", binding.extension, exc)
            return None
        if response is None:
            return None
        return round((time.monotonic() - started) * 1000.0, 3)

    async def close(self) -> None:
        tasks = list(self._loops.values())
        self._loops.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
