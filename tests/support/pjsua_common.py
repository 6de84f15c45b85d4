"""What every pjsua2 peer process of the tests does the same way (the caller and the agent).

pjsua2 runs in its own subprocess per peer (one global Endpoint per process); these helpers start
its endpoint and smooth over the pybind11 wrapper's quirks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def prop(value: Any) -> Any:
    """The wrapper exposes some getters as properties and others as methods; accept both."""
    return value() if callable(value) else value


def retry_busy(action: Callable[[], Any], attempts: int = 5) -> None:
    """Run a pjsua call operation, retrying when pjsua's call lock timed out (PJ_ETIMEDOUT).

    Right after a state change pjsua's worker thread may still hold the call lock.
    """
    for attempt in range(attempts):
        try:
            action()
            return
        except Exception as exc:
            if "PJ_ETIMEDOUT" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.1)


def start_endpoint(
    pj: Any, *, log_file: str, console_level: int, transport: str, bind: str | None = None
) -> tuple[Any, int, int]:
    """A started Endpoint with a null sound device and one transport on an ephemeral port.

    Returns the endpoint (keep it alive until shutdown), the transport id and its local port. pjsua's own
    level-5 log goes to ``log_file``: every message sent and received, for the test's diagnostics.
    """
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.logConfig.level = 5
    cfg.logConfig.consoleLevel = console_level
    cfg.logConfig.filename = log_file
    ep.libInit(cfg)
    ttype = {"udp": pj.TransportType.UDP, "tcp": pj.TransportType.TCP}[transport]
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    if bind is not None:
        tcfg.boundAddress = bind
    tid = ep.transportCreate(ttype, tcfg)
    ep.libStart()
    prop(ep.audDevManager).setNullDev()
    return ep, tid, int(prop(ep.transportGetInfo(tid).localName).split(":")[-1])
