"""The live :class:`~helpline.ivr.channel.HttpPort`, on an ``httpx.AsyncClient``."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from helpline.ivr.channel import HttpResponse


class HttpxPort:
    """Maps httpx errors onto the port's contract: ``TimeoutError`` and ``OSError``."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: str | None,
        timeout: float,
    ) -> HttpResponse:
        try:
            response = await self._client.request(
                method, url, headers=dict(headers), content=body, timeout=timeout
            )
        except httpx.TimeoutException as exc:
            raise TimeoutError(f"{method} {url}: timed out after {timeout}s") from exc
        except httpx.HTTPError as exc:
            raise OSError(f"{method} {url}: {exc}") from exc
        return HttpResponse(response.status_code, response.text, dict(response.headers))
