"""Service configuration: one TOML file, every key overridable by an environment variable.

Defaults run the whole service on embedded pieces (SQLite, a local data folder, the sample flows, SIP on
127.0.0.1:5060 and HTTP on 127.0.0.1:8080), so ``helpline serve`` needs no file at all. An environment
variable ``HELPLINE_<SECTION>__<KEY>`` overrides ``[section] key`` (lists and tables as JSON). A bad value
stops start-up with a message that names the key and where it came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from helpline.queue.config import QUEUE_NAME, QueueConfig
from helpline.recording.policy import RecordingSettings, RetentionSettings
from helpline.sbc_bridge import EdgePolicy, SipSettings, TrunkConfig
from helpline.sbc_bridge.agents.settings import AgentEdgeSettings
from helpline.sbc_bridge.guard import SecuritySettings

ENV_PREFIX = "HELPLINE_"
PACKAGE_ROOT = Path(__file__).resolve().parent


class ConfigError(Exception):
    """The configuration cannot be used; the message names every offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSection(_Section):
    """Process-wide settings."""

    data_dir: Path = Path("var")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    flows_dir: Path | None = None
    flow_reload_interval_s: float = Field(1.0, gt=0)
    shutdown_grace_s: float = Field(5.0, ge=0)


class HttpSection(_Section):
    """The REST API, metrics and health endpoint."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class WebSection(_Section):
    """Signing in to the web UI and the API: cookies, session lifetimes, the sign-in rate limit."""

    secure_cookies: bool = False  # also set when the request came over HTTPS
    concurrent_sessions: Literal["end_first", "refuse", "allow"] = "end_first"
    session_idle_minutes: float = Field(30.0, gt=0)
    session_hours: float = Field(12.0, gt=0)
    login_max_failures: int = Field(5, ge=1)
    login_window_s: float = Field(300.0, gt=0)
    api_token_days: float = Field(90.0, gt=0)  # ``helpline user token`` default


class DatabaseSection(_Section):
    """Where calls and events are stored: a SQLite file under data_dir unless a URL is given."""

    url: str | None = None


class MediaSection(_Section):
    """RTP for SIP calls."""

    host: str = "127.0.0.1"
    advertised_host: str | None = None
    rtp_port_min: int = Field(20000, ge=1024, le=65534)
    rtp_port_max: int = Field(29999, ge=1025, le=65535)
    media_timeout_s: float = Field(30.0, gt=0)
    learn_window_s: float = Field(1.0, gt=0)
    codecs: tuple[Literal["PCMU", "PCMA"], ...] = Field(("PCMU", "PCMA"), min_length=1)

    @model_validator(mode="after")
    def _range(self) -> MediaSection:
        if self.rtp_port_max - self.rtp_port_min < 2:
            raise ValueError("rtp_port_max must exceed rtp_port_min by at least 2")
        return self


class CallsSection(_Section):
    """How a call is handled around its flow."""

    ring_before_answer_ms: int = Field(0, ge=0, le=60_000)
    max_duration_s: float = Field(4 * 3600.0, gt=0)
    http_timeout_s: float = Field(5.0, gt=0)


def _default_trunks() -> list[TrunkConfig]:
    return [
        TrunkConfig(
            name="loopback",
            sources=("127.0.0.0/8",),
            country_code="1",
            national_prefix="1",
            international_prefix="011",
            dids={"+18005550100": "demo", "+18005550101": "recorded_support"},
        )
    ]


def _default_queues() -> dict[str, QueueConfig]:
    """The queues the sample flows use, so the embedded defaults route calls out of the box."""
    return {"billing": QueueConfig(), "support": QueueConfig()}


class Settings(BaseSettings):
    """Everything ``helpline serve`` needs; see the README's configuration reference."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    server: ServerSection = ServerSection()
    http: HttpSection = HttpSection()
    web: WebSection = WebSection()
    database: DatabaseSection = DatabaseSection()
    media: MediaSection = MediaSection()
    calls: CallsSection = CallsSection()
    sip: SipSettings = Field(default_factory=SipSettings)
    policy: EdgePolicy = Field(default_factory=EdgePolicy)
    trunks: list[TrunkConfig] = Field(default_factory=_default_trunks)
    agents: AgentEdgeSettings = Field(default_factory=AgentEdgeSettings)
    queues: dict[str, QueueConfig] = Field(default_factory=_default_queues)
    recording: RecordingSettings = Field(default_factory=RecordingSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, queues: dict[str, QueueConfig]) -> dict[str, QueueConfig]:
        import re

        bad = sorted(name for name in queues if not re.match(QUEUE_NAME, name))
        if bad:
            raise ValueError(f"queue name(s) {', '.join(map(repr, bad))} must match {QUEUE_NAME}")
        return queues

    @model_validator(mode="after")
    def _retention_policy_exists(self) -> Settings:
        name = self.recording.retention_policy
        if name not in self.retention.policies:
            known = ", ".join(sorted(self.retention.policies)) or "none"
            raise ValueError(f"recording.retention_policy {name!r} is not a [retention.policies] entry "
                             f"(known: {known})")
        return self

    @field_validator("trunks")
    @classmethod
    def _unique_trunks(cls, trunks: list[TrunkConfig]) -> list[TrunkConfig]:
        names = [t.name for t in trunks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate trunk name(s): {', '.join(dupes)}")
        return trunks

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        if toml_file is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file))

    # Derived values -----------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir.expanduser().resolve()

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{self.data_dir / 'helpline.sqlite3'}"

    @property
    def flows_dir(self) -> Path:
        if self.server.flows_dir is not None:
            return self.server.flows_dir.expanduser().resolve()
        return _sample_flows_dir()


def _sample_flows_dir() -> Path:
    """The sample flows: ./flows when run from a checkout, else the ones next to the package."""
    here = Path.cwd() / "flows"
    if here.is_dir():
        return here.resolve()
    return (PACKAGE_ROOT.parent / "flows").resolve()


def _env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc if not isinstance(p, int))


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (TOML) if given, apply ``HELPLINE_*`` environment overrides, validate.

    Raises ConfigError naming each bad key (``sip.port``), the file it came from and the environment
    variable that would override it.
    """
    if path is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        settings = _FromFile(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            key = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
            origin = f"{path}" if path is not None else "defaults"
            env = _env_name(loc[:2]) if loc else ""
            env_note = f" (or {env})" if env and env in os.environ else ""
            lines.append(f"  {key or '<root>'}: {err['msg']} [from {origin}{env_note}]")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
    except (OSError, ValueError) as exc:  # TOML syntax errors arrive as ValueError subclasses
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    return settings
