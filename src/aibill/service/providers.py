"""The platform's provider registry: the AI providers the platform has
configured, each enabled or disabled. A provider that is not registered, or
is disabled, is usable by nobody, system admins included; disabling one
refuses the next decision at once (see :mod:`aibill.service.access`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from aibill.domain import errors as e
from aibill.domain.access import ProviderInfo
from aibill.domain.permissions import check_provider
from aibill.domain.principal import Scope
from aibill.domain.text import check_line
from aibill.service.hooks import SettingsService
from aibill.store import access as access_store

__all__ = ["MAX_DISPLAY_NAME", "ProviderInfo", "ProviderRegistry"]

MAX_DISPLAY_NAME = 128


class ProviderRegistry(SettingsService):
    """Register providers, enable and disable them, list them (a part of
    :class:`aibill.service.access.Access`)."""

    def register_provider(
        self, provider: str, *, display_name: str | None = None, enabled: bool = True
    ) -> ProviderInfo:
        """Add a provider to the platform's registry, or update it: registering
        again sets ``enabled`` as given, and the display name when one is given
        (a new provider is displayed by its name unless one is given)."""
        name = check_provider(provider)
        shown = _check_display_name(display_name)
        _check_bool(enabled, "enabled")

        def work(conn: Connection) -> ProviderInfo:
            self._authorize(conn, None, Scope.ADMIN)
            row = access_store.provider(conn, name)
            now = self._now()
            if row is None:
                info = ProviderInfo(name, shown or name, enabled, now, now)
                self._auditor(
                    conn,
                    None,
                    "provider.register",
                    name,
                    None,
                    {"enabled": enabled, "display_name": info.display_name},
                )
                access_store.insert_provider(
                    conn, name, display_name=info.display_name, enabled=enabled, at=now
                )
                return info
            after = (shown or row.display_name, enabled)
            if after == (row.display_name, bool(row.enabled)):
                return _provider_info(row)  # unchanged: nothing to record
            self._auditor(
                conn,
                None,
                "provider.register",
                name,
                {"enabled": bool(row.enabled), "display_name": row.display_name},
                {"enabled": after[1], "display_name": after[0]},
            )
            access_store.set_provider(conn, name, display_name=after[0], enabled=after[1], at=now)
            return ProviderInfo(name, after[0], after[1], row.created_at, now)

        return self._write(work)

    def set_provider_enabled(self, provider: str, enabled: bool) -> ProviderInfo:
        """Enable or disable a registered provider for every mandate. A disabled
        provider is refused from the next decision on; calls already running
        finish and are billed."""
        name = check_provider(provider)
        _check_bool(enabled, "enabled")

        def work(conn: Connection) -> ProviderInfo:
            self._authorize(conn, None, Scope.ADMIN)
            row = access_store.provider(conn, name)
            if row is None:
                raise _unknown_provider(name)
            if bool(row.enabled) == enabled:
                return _provider_info(row)
            self._auditor(
                conn,
                None,
                "provider.enable" if enabled else "provider.disable",
                name,
                {"enabled": bool(row.enabled)},
                {"enabled": enabled},
            )
            now = self._now()
            access_store.set_provider_enabled(conn, name, enabled=enabled, at=now)
            return ProviderInfo(name, row.display_name, enabled, row.created_at, now)

        return self._write(work)

    def providers(self) -> list[ProviderInfo]:
        """Every registered provider, enabled or not, by name."""

        def work(conn: Connection) -> list[ProviderInfo]:
            return [_provider_info(r) for r in access_store.list_providers(conn)]

        return self._read(work)


def _provider_info(row: Any) -> ProviderInfo:
    return ProviderInfo(
        row.provider, row.display_name, bool(row.enabled), row.created_at, row.updated_at
    )


def _unknown_provider(provider: str) -> e.NotFound:
    return e.NotFound(f"No provider named {provider!r} is registered.", provider=provider)


def _check_display_name(value: str | None) -> str | None:
    if value is None:
        return None
    return check_line(value, "display_name", max_length=MAX_DISPLAY_NAME)


def _check_bool(value: object, field: str) -> None:
    if not isinstance(value, bool):
        raise e.InvalidRequest(f"{field} must be True or False, not {value!r}.", field=field)
