"""The client's administrative parts, with the surface of the library's
services: ``client.pricing``, ``client.access`` and ``client.keys``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import TextIO
from urllib.parse import quote

from aibill.client.transport import Transport
from aibill.client.wire import (
    decimal_text,
    json_body,
    keys_path,
    parse,
    parse_decimal,
    seg,
    strings,
    user_path,
)
from aibill.domain import errors as e
from aibill.domain.access import ProviderInfo, RoleInfo, RuleInfo
from aibill.domain.keys import ApiKey, CreatedKey
from aibill.domain.permissions import BUILTIN_RULES, Rule
from aibill.domain.prices import CustomPrice, ExchangeRate, Markup, ModelPrice


class _Part:
    """A part of the client with the surface of one of the library's services."""

    def __init__(self, client: Transport) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._client.base_url!r})"


class PricingClient(_Part):
    """``client.pricing``: the surface of ``billing.pricing`` over HTTP."""

    def set_exchange_rate(
        self,
        base: str,
        quote: str,
        rate: Decimal | int | str,
        *,
        valid_from: datetime | None = None,
        source: str | None = None,
    ) -> ExchangeRate:
        """Set the rate from ``base`` to ``quote`` from ``valid_from`` (default:
        now) on (system admins)."""
        body = json_body(
            base=base,
            quote=quote,
            rate=decimal_text(rate, "rate"),
            valid_from=valid_from,
            source=source,
        )
        return parse(ExchangeRate, self._client._call("POST", "/v1/exchange-rates", body))

    def import_exchange_rates(self, source: TextIO | Iterable[str]) -> int:
        """Import rates from CSV (a text file or an iterable of lines with the
        header ``base,quote,rate,valid_from``), all or nothing; returns how many
        were new. The file is sent whole, so it must fit in one request (64 KiB)."""
        if isinstance(source, str):
            raise e.InvalidRequest(
                "import_exchange_rates reads a file or an iterable of lines, not one string "
                "(wrap it: io.StringIO(text)).",
                field="source",
            )
        text = "".join(line if line.endswith("\n") else f"{line}\n" for line in source)
        answer = self._client._call("POST", "/v1/exchange-rates/import", content=text)
        return int(answer["imported"])

    def exchange_rates(
        self, base: str | None = None, quote: str | None = None
    ) -> list[ExchangeRate]:
        params = {"base": base, "quote": quote}
        return self._client._list(ExchangeRate, "/v1/exchange-rates", params=params)

    def exchange_rate(self, base: str, quote: str, at: datetime) -> Decimal:
        """The rate from ``base`` to ``quote`` in force at ``at``."""
        path = f"/v1/exchange-rates/{seg(base)}/{seg(quote)}"
        return parse_decimal(self._client._field(path, "rate", params={"at": at}), "rate")

    def set_markup(
        self,
        percent: Decimal | int | str,
        *,
        mandate: str | None = None,
        provider: str | None = None,
        model: str | None = None,
    ) -> Markup:
        """Set a markup in percent for the platform, a mandate, a provider or a model."""
        body = json_body(
            percent=decimal_text(percent, "percent"),
            mandate=mandate,
            provider=provider,
            model=model,
        )
        return parse(Markup, self._client._call("POST", "/v1/markups", body))

    def clear_markup(
        self, *, mandate: str | None = None, provider: str | None = None, model: str | None = None
    ) -> bool:
        """Remove the markup of exactly this scope; returns whether there was one."""
        params = {"mandate": mandate, "provider": provider, "model": model}
        answer = self._client._call("DELETE", "/v1/markups", params=params)
        return bool(answer["removed"])

    def markups(self, mandate: str | None = None) -> list[Markup]:
        return self._client._list(Markup, "/v1/markups", params={"mandate": mandate})

    def markup_for(self, mandate: str | None, provider: str | None, model: str | None) -> Decimal:
        """The markup in percent that applies to a call: the most specific set, else 50."""
        params = {"mandate": mandate, "provider": provider, "model": model}
        percent = self._client._field("/v1/markups/effective", "percent", params=params)
        return parse_decimal(percent, "percent")

    def set_custom_price(
        self,
        provider: str,
        model: str,
        *,
        input_mtok: Decimal | int | str,
        output_mtok: Decimal | int | str,
        cache_read_mtok: Decimal | int | str | None = None,
        cache_write_mtok: Decimal | int | str | None = None,
        per_request: Decimal | int | str | None = None,
        currency: str = "USD",
        valid_from: datetime | None = None,
        mandate: str | None = None,
        output_limit: int | None = None,
    ) -> CustomPrice:
        """Price a model (one the catalog lacks, or instead of the catalog) from
        ``valid_from`` (default: now) on, platform-wide or for one mandate."""
        prices = {
            "input_mtok": input_mtok,
            "output_mtok": output_mtok,
            "cache_read_mtok": cache_read_mtok,
            "cache_write_mtok": cache_write_mtok,
            "per_request": per_request,
        }
        body = json_body(
            provider=provider,
            model=model,
            **{k: None if v is None else decimal_text(v, k) for k, v in prices.items()},
            currency=currency,
            valid_from=valid_from,
            mandate=mandate,
            output_limit=output_limit,
        )
        return parse(CustomPrice, self._client._call("POST", "/v1/prices", body))

    def custom_prices(self, mandate: str | None = None) -> list[CustomPrice]:
        return self._client._list(CustomPrice, "/v1/prices", params={"mandate": mandate})

    def model_price(
        self,
        provider: str,
        model: str,
        *,
        mandate: str | None = None,
        at: datetime | None = None,
    ) -> ModelPrice:
        """The prices in force for one model at ``at`` (default: now): the
        mandate's custom price, else the platform's, else the catalog's."""
        path = f"/v1/prices/{seg(provider)}/{quote(model, safe=':@/')}"
        return self._client._get(ModelPrice, path, params={"mandate": mandate, "at": at})


class AccessClient(_Part):
    """``client.access``: the surface of ``billing.access`` over HTTP."""

    @staticmethod
    def builtin_rules() -> tuple[Rule, ...]:
        """The default rules of the built-in roles (those of this library's version)."""
        return BUILTIN_RULES

    def register_provider(
        self, provider: str, *, display_name: str | None = None, enabled: bool = True
    ) -> ProviderInfo:
        """Add a provider to the platform's registry, or update it (system admins)."""
        body = json_body(provider=provider, display_name=display_name, enabled=enabled)
        return parse(ProviderInfo, self._client._call("POST", "/v1/providers", body))

    def set_provider_enabled(self, provider: str, enabled: bool) -> ProviderInfo:
        """Enable or disable a provider; disabling stops new holds at once."""
        path = f"/v1/providers/{seg(provider)}"
        return parse(ProviderInfo, self._client._call("PATCH", path, {"enabled": enabled}))

    def providers(self) -> list[ProviderInfo]:
        return self._client._list(ProviderInfo, "/v1/providers")

    def add_sysadmin(self, user: str) -> None:
        self._client._call("POST", "/v1/sysadmins", {"user": user})

    def remove_sysadmin(self, user: str) -> None:
        self._client._call("DELETE", f"/v1/sysadmins/{seg(user)}")

    def is_sysadmin(self, user: str) -> bool:
        return bool(self._client._field(f"/v1/sysadmins/{seg(user)}", "sysadmin"))

    def grant_role(self, mandate: str, user: str, role: str) -> list[str]:
        """Give ``user`` ``role`` in ``mandate``; returns their roles."""
        return strings(self._client._call("PUT", user_path(mandate, user, "roles", role)))

    def revoke_role(self, mandate: str, user: str, role: str) -> list[str]:
        """Take ``role`` from ``user`` in ``mandate``; returns their roles."""
        return strings(self._client._call("DELETE", user_path(mandate, user, "roles", role)))

    def roles_of(self, mandate: str, user: str) -> list[str]:
        return strings(self._client._call("GET", user_path(mandate, user, "roles")))

    def define_role(self, mandate: str, role: str, description: str | None = None) -> RoleInfo:
        """Define a custom role in ``mandate``; give it rules with :meth:`add_rule`."""
        body = json_body(role=role, description=description)
        path = f"/v1/mandates/{seg(mandate)}/roles"
        return parse(RoleInfo, self._client._call("POST", path, body))

    def custom_roles(self, mandate: str) -> list[RoleInfo]:
        return self._client._list(RoleInfo, f"/v1/mandates/{seg(mandate)}/roles")

    def add_rule(
        self, mandate: str, role: str, context: str, item: str, permissions: Iterable[str]
    ) -> RuleInfo:
        """Grant ``permissions`` on ``item`` (in ``context``) to ``role`` in ``mandate``."""
        body = {
            "role": role,
            "context": str(context),
            "item": item,
            "permissions": [str(p) for p in permissions],
        }
        path = f"/v1/mandates/{seg(mandate)}/rules"
        return parse(RuleInfo, self._client._call("POST", path, body))

    def remove_rule(self, mandate: str, rule_id: str) -> None:
        self._client._call("DELETE", f"/v1/mandates/{seg(mandate)}/rules/{seg(rule_id)}")

    def rules(self, mandate: str) -> list[RuleInfo]:
        return self._client._list(RuleInfo, f"/v1/mandates/{seg(mandate)}/rules")

    def allowed_providers(self, mandate: str, user: str) -> list[str]:
        """The enabled providers ``user`` may use in ``mandate``, sorted."""
        return strings(self._client._call("GET", user_path(mandate, user, "providers")))

    def is_provider_allowed(self, mandate: str, user: str, provider: str) -> bool:
        """May ``user`` use ``provider`` in ``mandate`` now? False on any doubt
        (also when this key may not read the mandate), as in the library."""
        path = user_path(mandate, user, "providers", provider)
        try:
            return bool(self._client._field(path, "allowed"))
        except e.PermissionDenied:
            return False


class KeysClient(_Part):
    """``client.keys``: the surface of ``billing.keys`` over HTTP. ``mandate``
    None is the platform: a system admin's keys."""

    def create_key(
        self,
        *,
        user: str,
        mandate: str | None,
        scopes: Iterable[str] = ("billing:use",),
        expires_at: datetime | None = None,
        name: str | None = None,
    ) -> CreatedKey:
        """A new key for ``user``; its ``secret`` is in this answer only."""
        body = json_body(
            user=user, scopes=[str(x) for x in scopes], expires_at=expires_at, name=name
        )
        return parse(CreatedKey, self._client._call("POST", keys_path(mandate), body))

    def list_keys(self, mandate: str | None) -> list[ApiKey]:
        return self._client._list(ApiKey, keys_path(mandate))

    def get_key(self, key_id: str, *, mandate: str | None) -> ApiKey:
        return self._client._get(ApiKey, keys_path(mandate, key_id))

    def revoke_key(self, key_id: str, *, mandate: str | None) -> ApiKey:
        """Revoke a key at once; revoking it again returns it as it is."""
        path = keys_path(mandate, key_id, "revoke")
        return parse(ApiKey, self._client._call("POST", path))
