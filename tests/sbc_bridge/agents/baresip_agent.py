"""A second real softphone (baresip) as an agent, for interop tests of the agent listener.

baresip runs from a throw-away config directory with a minimal module list (G.711, file source
and sink: no sound card needed) and one account that registers with digest and auto-answers::

    async with BaresipAgent(registrar=edge.local_addresses["udp"], extension="1002",
                            password="pw", workdir=tmp_path) as agent:
        ...  # the edge sees a binding; AgentEdge.dial(...) is answered automatically

``output`` collects baresip's console lines (registration results, call events).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import wave
from pathlib import Path

MODULE_PATH = "/usr/lib/baresip/modules"


def free_udp_port() -> int:
    """An unused UDP port on 127.0.0.1 (baresip needs a concrete sip_listen port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
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
    ) -> None:
        self.registrar = registrar
        self.extension = extension
        self.password = password
        self.transport = transport
        self.port = port or free_udp_port()
        self.regint = regint
        self.config_dir = workdir / f"baresip-{extension}-{self.port}"
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
        (self.config_dir / "config").write_text(
            "\n".join(
                [
                    f"sip_listen\t127.0.0.1:{self.port}",
                    "net_interface\t127.0.0.1",  # loopback-only namespaces: lo is no "network" to it
                    f"module_path\t{MODULE_PATH}",
                    "module\tg711.so",
                    "module\taufile.so",
                    "module_app\taccount.so",
                    "audio_player\taufile,/dev/null",
                    f"audio_source\taufile,{self.config_dir / 'silence.wav'}",
                    "",
                ]
            )
        )
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

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
