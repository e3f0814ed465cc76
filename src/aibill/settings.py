"""How ``aibill serve`` is configured: environment variables, a config file, or flags.

Each setting is read, from the highest priority down, from

1. the command line (``aibill serve --db ... --host ... --port ... --workers ...``),
2. an environment variable ``AIBILL_<NAME>`` (``AIBILL_DATABASE_URL``, ``AIBILL_PORT``, ...),
3. the TOML file named by ``AIBILL_CONFIG``, if set (flat keys, the names below),
4. the default.

Nothing is read when this module is imported: :func:`load_settings` reads the
environment and the file each time it is called.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url

from aibill.domain.sessions import SessionPolicy
from aibill.domain.throttle import (
    DEFAULT_BURST,
    DEFAULT_PER_MINUTE,
    MAX_BURST,
    MAX_PER_MINUTE,
    FailureBudget,
)
from aibill.service.key_cache import DEFAULT_TTL_S, MAX_TTL_S

CONFIG_ENV = "AIBILL_CONFIG"
MAX_DEFAULT_WORKERS = 4
MIN_POSTGRES_WORKERS = 2


class SettingsError(ValueError):
    """The settings cannot be used; the message says which one and why."""


class Settings(BaseSettings):
    """The service's settings; see :mod:`aibill.settings` for where they come from."""

    model_config = SettingsConfigDict(env_prefix="AIBILL_", extra="forbid")

    database_url: str = Field(
        default="sqlite:///aibill.db",
        description="SQLite (sqlite:///path.db) or PostgreSQL (postgresql+psycopg://user@host/db).",
    )
    host: str = Field(default="127.0.0.1", description="The address to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="The TCP port to listen on.")
    workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Worker processes; default 1 on SQLite, 2-4 (by CPU count) on PostgreSQL.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Logs as readable text or one JSON object per line."
    )
    group_commit: bool | None = Field(
        default=None,
        description="Concurrent money-path writes share one transaction and one commit"
        " (unset: on).",
    )
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = Field(
        default="FULL", description="SQLite durability: FULL survives power loss."
    )

    session_idle_minutes: int = Field(
        default=30,
        ge=1,
        le=24 * 60,
        description="A dashboard session ends after this many minutes without a request.",
    )
    session_hours: int = Field(
        default=12,
        ge=1,
        le=24 * 30,
        description="A dashboard session ends this many hours after sign-in, however busy.",
    )

    key_cache_s: float = Field(
        default=DEFAULT_TTL_S,
        ge=0,
        le=MAX_TTL_S,
        allow_inf_nan=False,
        description="Trust an API key verified this many seconds ago without reading it"
        " again (0: read it at every request); a key revoked by another worker process"
        " stops working within this time (see docs/api-keys.md).",
    )

    auth_throttle: bool = Field(
        default=True,
        description="Answer 429 to a client address or API key id after too many failed"
        " authentications (only failures count; see docs/api-keys.md).",
    )
    auth_failure_burst: int = Field(
        default=DEFAULT_BURST,
        ge=1,
        le=MAX_BURST,
        description="Failed authentications an address or key id may make at once.",
    )
    auth_failures_per_minute: int = Field(
        default=DEFAULT_PER_MINUTE,
        ge=1,
        le=MAX_PER_MINUTE,
        description="After the burst, failed authentications allowed per minute.",
    )

    db_connect_timeout_s: int = Field(
        default=5,
        ge=2,
        le=300,
        description="Give up making a PostgreSQL connection after this many seconds (at least 2).",
    )
    db_statement_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="PostgreSQL cancels one statement (lock waits included) after this long.",
    )
    db_pool_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="A request waits this long for a free connection from the pool.",
    )

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        try:
            backend = make_url(value).get_backend_name()
        except Exception as exc:
            raise ValueError(f"not a database URL: {value!r}") from exc
        if backend not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(f"aibill stores its ledger in SQLite or PostgreSQL, not {backend!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_ENV)
        if path:
            if not Path(path).is_file():
                raise SettingsError(f"{CONFIG_ENV}={path}: no such file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.database_url).get_backend_name() == "sqlite"

    @property
    def requested_workers(self) -> int:
        """The worker count asked for, or the backend's default."""
        if self.workers is not None:
            return self.workers
        if self.is_sqlite:
            return 1
        return max(MIN_POSTGRES_WORKERS, min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1))

    @property
    def effective_workers(self) -> int:
        """The worker processes the service runs: always 1 on SQLite, which has a
        single writer (more processes would only queue for its write lock)."""
        return 1 if self.is_sqlite else self.requested_workers

    @property
    def display_url(self) -> str:
        """The database URL with any password masked, for printing."""
        return make_url(self.database_url).render_as_string(hide_password=True)

    def to_env(self) -> dict[str, str]:
        """These settings as ``AIBILL_*`` environment variables (for worker processes)."""
        return {
            "AIBILL_DATABASE_URL": self.database_url,
            "AIBILL_HOST": self.host,
            "AIBILL_PORT": str(self.port),
            "AIBILL_WORKERS": str(self.effective_workers),
            "AIBILL_LOG_FORMAT": self.log_format,
            "AIBILL_SQLITE_SYNCHRONOUS": self.sqlite_synchronous,
            "AIBILL_SESSION_IDLE_MINUTES": str(self.session_idle_minutes),
            "AIBILL_SESSION_HOURS": str(self.session_hours),
            "AIBILL_KEY_CACHE_S": str(self.key_cache_s),
            "AIBILL_AUTH_THROTTLE": str(self.auth_throttle).lower(),
            "AIBILL_AUTH_FAILURE_BURST": str(self.auth_failure_burst),
            "AIBILL_AUTH_FAILURES_PER_MINUTE": str(self.auth_failures_per_minute),
            "AIBILL_DB_CONNECT_TIMEOUT_S": str(self.db_connect_timeout_s),
            "AIBILL_DB_STATEMENT_TIMEOUT_S": str(self.db_statement_timeout_s),
            "AIBILL_DB_POOL_TIMEOUT_S": str(self.db_pool_timeout_s),
        }

    @property
    def session_policy(self) -> SessionPolicy:
        """How long the dashboard's sessions live."""
        return SessionPolicy(
            idle=timedelta(minutes=self.session_idle_minutes),
            absolute=timedelta(hours=self.session_hours),
        )

    @property
    def auth_budget(self) -> FailureBudget:
        """The failure budget of each client address and API key id."""
        return FailureBudget(
            burst=self.auth_failure_burst,
            per_minute=self.auth_failures_per_minute,
            enabled=self.auth_throttle,
        )


def load_settings(**overrides: Any) -> Settings:
    """Read the settings now; ``overrides`` that are not None win over everything
    else (the command line's flags). Raises :class:`SettingsError` with a readable
    message when a value is invalid."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from exc
