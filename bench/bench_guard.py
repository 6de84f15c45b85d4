"""EdgeGuard cost per message: ``admit_bytes`` (before parsing) and ``screen`` (after parsing).

Prints a table and writes bench/results/guard.json. Pure CPU, no network::

    .venv/bin/python bench/bench_guard.py [--messages 200000] [--repeats 7]

Each row times one loop over ``--messages`` messages twice, with the guard call and without it
(the baseline: the same loop, the same arguments, no guard), and reports nanoseconds per message
for both, the guard's own cost (the difference) and the ratio. The "parse" rows put the guard next
to what every message costs anyway (``SipMessage.parse`` of a 700-byte INVITE), which is the
ratio that matters on the receive path. The best of ``--repeats`` runs is kept (the least disturbed
by the rest of the machine; guarded and baseline runs alternate); the medians are in the JSON, and
so is the machine's load average, since a loaded machine inflates every number.

Sources rotate through 10,000 addresses, so per-source buckets stay within their burst (a passing
request is what is being measured, not a drop) and every table sees many keys.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiosipua.message import SipMessage, SipRequest  # noqa: E402

from helpline.sbc_bridge.guard import EdgeGuard, SecuritySettings  # noqa: E402

RESULTS = REPO / "bench" / "results" / "guard.json"
SOURCES = 10_000
_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
)
INVITE = (
    b"INVITE sip:2125550199@192.0.2.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Caller" <sip:2125550100@198.51.100.7>;tag=1928301774\r\n'
    b"To: <sip:2125550199@192.0.2.1>\r\n"
    b"Call-ID: a84b4c76e66710@198.51.100.7\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:2125550100@198.51.100.7:5060>\r\n"
    b"User-Agent: Carrier SBC 1.0\r\n"
    b"Supported: timer, replaces\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\n"
    b"Content-Type: application/sdp\r\n" + b"Content-Length: %d\r\n\r\n" % len(_SDP) + _SDP
)


def _guard(**settings: Any) -> EdgeGuard:
    # rates high enough that the measured requests pass: the cost of a pass, not of a drop
    rates = {m: {"per_source": 1e6, "burst": 1e6, "global": 1e9} for m in ("INVITE", "OPTIONS", "other")}
    settings.setdefault("rates", {**rates, "REGISTER": rates["INVITE"]})
    return EdgeGuard(SecuritySettings.model_validate(settings), on_event=lambda kind, data: None)


def _time(loop: Callable[[], None]) -> float:
    gc.collect()
    start = time.perf_counter_ns()
    loop()
    return float(time.perf_counter_ns() - start)


def _row(
    name: str, with_guard: Callable[[], None], baseline: Callable[[], None], n: int, repeats: int
) -> dict[str, Any]:
    guarded: list[float] = []
    base: list[float] = []
    for _ in range(repeats):  # interleaved, so drift in the machine's load hits both alike
        guarded.append(_time(with_guard))
        base.append(_time(baseline))
    best_g, best_b = min(guarded) / n, min(base) / n
    return {
        "name": name,
        "messages": n,
        "baseline_ns": round(best_b, 1),
        "guarded_ns": round(best_g, 1),
        "guard_ns": round(best_g - best_b, 1),
        "ratio": round(best_g / best_b, 3) if best_b else None,
        "baseline_ns_median": round(statistics.median(base) / n, 1),
        "guarded_ns_median": round(statistics.median(guarded) / n, 1),
    }


def run(n: int, repeats: int) -> list[dict[str, Any]]:
    addrs = [(f"10.{i // 256 % 256}.{i % 256}.1", 5060) for i in range(SOURCES)]
    stream = [addrs[i % SOURCES] for i in range(n)]
    size = len(INVITE)
    rows = []

    guard = _guard()
    admit = guard.admit_bytes

    def admit_loop() -> None:
        for addr in stream:
            admit("trunk", "udp", addr, size)

    def empty_loop() -> None:
        for addr in stream:
            (addr, size)  # noqa: B018 - the same iteration, no call

    def nothing(listener: str, transport: str, addr: tuple[str, int], size: int) -> bool:
        return True

    def call_loop() -> None:
        for addr in stream:
            nothing("trunk", "udp", addr, size)

    rows.append(_row("admit_bytes vs empty loop", admit_loop, empty_loop, n, repeats))
    rows.append(_row("admit_bytes vs a do-nothing call", admit_loop, call_loop, n, repeats))

    banned = _guard()
    for i in range(100_000):
        banned.bans.ban(f"172.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", "source", "flood", 900)
    banned_admit = banned.admit_bytes

    def admit_full_table() -> None:
        for addr in stream:
            banned_admit("trunk", "udp", addr, size)

    rows.append(_row("admit_bytes, 100k bans held", admit_full_table, call_loop, n, repeats))
    dropped = [("172.0.0.1", 5060)] * n

    def admit_banned() -> None:
        for addr in dropped:
            banned_admit("trunk", "udp", addr, size)

    rows.append(_row("admit_bytes, banned source (drop)", admit_banned, call_loop, n, repeats))

    parse_n = max(n // 10, 1000)
    parse_stream = stream[:parse_n]

    def parse_only() -> None:
        for _ in parse_stream:
            SipMessage.parse(INVITE)

    def admit_then_parse() -> None:
        for addr in parse_stream:
            if admit("trunk", "udp", addr, size):
                SipMessage.parse(INVITE)

    rows.append(
        _row("receive path: admit_bytes + parse vs parse", admit_then_parse, parse_only, parse_n, repeats)
    )

    request = SipMessage.parse(INVITE)
    assert isinstance(request, SipRequest)
    screen = _guard().screen

    def screen_loop() -> None:
        for addr in parse_stream:
            screen("trunk", "udp", request, addr)

    def no_screen_loop() -> None:
        for addr in parse_stream:
            nothing("trunk", "udp", addr, 0)

    rows.append(_row("screen (INVITE, untrusted, passes)", screen_loop, no_screen_loop, parse_n, repeats))
    trusting = _guard()
    trusting.trusted = lambda ip: True
    trusted_screen = trusting.screen

    def trusted_loop() -> None:
        for addr in parse_stream:
            trusted_screen("trunk", "udp", request, addr)

    rows.append(_row("screen (INVITE, trusted trunk)", trusted_loop, no_screen_loop, parse_n, repeats))

    def parse_then_screen() -> None:
        for addr in parse_stream:
            screen("trunk", "udp", SipMessage.parse(INVITE), addr)  # type: ignore[arg-type]

    rows.append(
        _row("receive path: parse + screen vs parse", parse_then_screen, parse_only, parse_n, repeats)
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rows = run(args.messages, args.repeats)
    print(f"{'case':<46} {'baseline ns':>11} {'guarded ns':>11} {'guard ns':>9} {'ratio':>7}")
    for row in rows:
        print(
            f"{row['name']:<46} {row['baseline_ns']:>11.1f} {row['guarded_ns']:>11.1f} "
            f"{row['guard_ns']:>9.1f} {row['ratio']:>7.3f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "bench": "guard",
                "at": datetime.now(UTC).isoformat(),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "messages": args.messages,
                "load_average": os.getloadavg(),
                "cpus": os.cpu_count(),
                "repeats": args.repeats,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
