"""A second real softphone (baresip) as an agent, for interop tests of the agent listener.

baresip runs from a throw-away config directory with a minimal module list (G.711, file source
and sink: no sound card needed) and one account that registers with digest and auto-answers::

    async with BaresipAgent(registrar=edge.local_addresses["udp"], extension="1002",
                            password="pw", workdir=tmp_path) as agent:
        ...  # the edge sees a binding; AgentEdge.dial(...) is answered automatically

``output`` collects baresip's console lines (registration results, call events).

For audio checks: ``tone_hz`` makes the phone send a sine (module ``ausine``, which only runs at
48 kHz stereo; baresip resamples to G.711) instead of silence, and ``record=True`` saves what it
receives, decoded, to ``dump-*-dec.wav`` under :attr:`BaresipAgent.record_dir` (module ``sndfile``):
:meth:`BaresipAgent.received_pcm` reads it back as 8 kHz mono PCM16. :meth:`BaresipAgent.command`
drives the phone through ``ctrl_tcp`` (JSON in netstrings), e.g. ``await agent.command("hangup")``.
"""

from __future__ import annotations

import asyncio
import audioop
import contextlib
import json
import shutil
import socket
import wave
from pathlib import Path

from tests.support.peer_process import stop_peer

MODULE_PATH = "/usr/lib/baresip/modules"


def free_udp_port() -> int:
    """An unused UDP port on 127.0.0.1 (baresip needs a concrete sip_listen port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_tcp_port() -> int:
    """An unused TCP port on 127.0.0.1 (for baresip's ctrl_tcp listener)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BaresipAgent:
    """Async handle on one baresip subprocess registered as ``extension``."""

    def __init__(
        self,
        *,
        registrar: tuple[str, int],
        extension: str,
        password: str,
        workdir: Path,
        transport: str = "udp",
        port: int | None = None,
        regint: int = 300,
        tone_hz: int | None = None,
        record: bool = False,
    ) -> None:
        self.registrar = registrar
        self.extension = extension
        self.password = password
        self.transport = transport
        self.port = port or free_udp_port()
        self.regint = regint
        self.config_dir = workdir / f"baresip-{extension}-{self.port}"
        self.tone_hz = tone_hz
        self.record = record
        self.record_dir = self.config_dir / "received"
        self.ctrl_port = free_tcp_port()
        self.output: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        with wave.open(str(self.config_dir / "silence.wav"), "wb") as silence:
            silence.setnchannels(1)
            silence.setsampwidth(2)
            silence.setframerate(8000)
            silence.writeframes(b"\0\0" * 8000)
        lines = [
            f"sip_listen\t127.0.0.1:{self.port}",
            "net_interface\t127.0.0.1",  # loopback-only namespaces: lo is no "network" to it
            f"module_path\t{MODULE_PATH}",
            "module\tg711.so",
            "module\taufile.so",
            "module_app\taccount.so",
            "module_app\tmenu.so",  # the commands ctrl_tcp runs (hangup, ...)
            "module_app\tctrl_tcp.so",
            f"ctrl_tcp_listen\t127.0.0.1:{self.ctrl_port}",
        ]
        if self.tone_hz is not None:
            lines += [
                "module\tausine.so",
                f"audio_source\tausine,{self.tone_hz}",
                "ausrc_srate\t48000",
                "ausrc_channels\t2",
            ]
        else:
            lines.append(f"audio_source\taufile,{self.config_dir / 'silence.wav'}")
        if self.record:
            # sndfile is a filter: it needs a player that pulls audio, which aubridge provides
            self.record_dir.mkdir(parents=True, exist_ok=True)
            lines += [
                "module\tsndfile.so",
                "module\taubridge.so",
                f"snd_path\t{self.record_dir}",
                "audio_player\taubridge,sink",
            ]
        else:
            lines.append("audio_player\taufile,/dev/null")
        (self.config_dir / "config").write_text("\n".join([*lines, ""]))
        host, port = self.registrar
        (self.config_dir / "accounts").write_text(
            f"<sip:{self.extension}@{host}:{port};transport={self.transport}>"
            f";auth_pass={self.password};answermode=auto;regint={self.regint}\n"
        )

    async def __aenter__(self) -> BaresipAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        binary = shutil.which("baresip")
        if binary is None:
            raise AssertionError("baresip is not installed (apt-get install baresip)")
        self.write_config()
        self.proc = await asyncio.create_subprocess_exec(
            binary,
            "-f",
            str(self.config_dir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            async with self._changed:
                self.output.append(line.decode("utf-8", "replace").rstrip())
                self._changed.notify_all()

    async def wait_output(self, text: str, timeout: float) -> str:
        """The first console line containing ``text``."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                while True:
                    for line in self.output:
                        if text in line:
                            return line
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"baresip never printed {text!r}; output: {self.output}") from None

    async def command(self, name: str, params: str = "", timeout: float = 5.0) -> dict[str, object]:
        """Run a baresip command (``hangup``, ``dial``...) over ctrl_tcp; returns its JSON response."""
        body = json.dumps({"command": name, "params": params, "token": name}).encode()
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
            try:
                writer.write(b"%d:%s," % (len(body), body))
                await writer.drain()
                while True:  # events may come first; the response carries our token
                    length = int((await reader.readuntil(b":"))[:-1])
                    message = json.loads((await reader.readexactly(length + 1))[:-1])
                    if message.get("response"):
                        return dict(message)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    def recordings(self) -> list[Path]:
        """The WAV files of decoded received audio written so far (one per call)."""
        return sorted(self.record_dir.glob("dump-*-dec.wav"))

    def received_pcm(self) -> bytes:
        """The last call's received audio as 8 kHz mono PCM16 (for tone detection)."""
        files = self.recordings()
        if not files:
            raise AssertionError(f"baresip recorded nothing in {self.record_dir}; output: {self.output}")
        with wave.open(str(files[-1]), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            pcm = wav.readframes(wav.getnframes())
        if channels == 2:
            pcm = audioop.tomono(pcm, width, 0.5, 0.5)
        if width != 2:
            pcm = audioop.lin2lin(pcm, width, 2)
        if rate != 8000:
            pcm, _ = audioop.ratecv(pcm, 2, 1, rate, 8000, None)
        return pcm

    async def stop(self) -> None:
        """SIGTERM (baresip quits cleanly on it), then kill it if it does not within a few seconds."""
        proc = self.proc
        await stop_peer(proc, self._reader, lambda: proc.terminate() if proc is not None else None)
