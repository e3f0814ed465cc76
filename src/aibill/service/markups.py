"""Markups: the platform's margin on the provider cost, in percent.

A markup is set platform-wide or for one mandate, for every provider, one
provider, or one model of a provider. The most specific markup set for a
call's mandate, provider and model applies
(:func:`aibill.domain.pricing_rules.markup_precedence`), and
``DEFAULT_MARKUP_PERCENT`` (50) when none is.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from aibill.domain.errors import InvalidRequest
from aibill.domain.model import check_name
from aibill.domain.prices import (
    DEFAULT_MARKUP_PERCENT,
    MODEL_MAX_LENGTH,
    PROVIDER_MAX_LENGTH,
    Markup,
    check_label,
    check_markup_percent,
)
from aibill.domain.pricing_rules import markup_precedence
from aibill.domain.principal import Scope
from aibill.domain.text import check_searchable
from aibill.service.pricing_base import PricingBase, require_mandate, stored_decimal
from aibill.store import prices

_MarkupScope = tuple[str | None, str, str]
"""A markup's mandate (None: the platform), provider and model (``''``: any)."""


class Markups(PricingBase):
    """Setting, clearing and reading markups (part of
    :class:`~aibill.service.pricing.Pricing`)."""

    def set_markup(
        self,
        percent: Decimal | int | str,
        *,
        mandate: str | None = None,
        provider: str | None = None,
        model: str | None = None,
    ) -> Markup:
        """Set a markup in percent (0 to 1000), replacing the one of the same scope.

        Without ``mandate`` it is platform-wide; without ``provider`` it
        applies to every provider; ``model`` needs ``provider``. The most
        specific markup wins (see :meth:`markup_for`).
        """
        pct = check_markup_percent(percent)
        scope = _markup_scope(mandate, provider, model)

        def work(conn: Connection) -> Markup:
            self._authorize(conn, mandate, Scope.ADMIN)
            now = self._now()
            if mandate is not None:
                require_mandate(conn, mandate)
            found = prices.markup(conn, *scope)
            if found is not None and Decimal(found.percent) == pct:
                return Markup(pct, mandate, provider, model, found.updated_at)  # unchanged
            target = f"{provider or '*'}/{model or '*'}"
            before = None if found is None else {"percent": found.percent}
            self._auditor(conn, mandate, "markup.set", target, before, {"percent": pct})
            change = prices.insert_markup if found is None else prices.update_markup
            change(conn, *scope, percent=stored_decimal(pct), updated_at=now)
            return Markup(pct, mandate, provider, model, now)

        return self._write(work)

    def clear_markup(
        self, *, mandate: str | None = None, provider: str | None = None, model: str | None = None
    ) -> bool:
        """Remove the markup of exactly this scope, so a less specific one applies.
        Returns whether there was one."""
        scope = _markup_scope(mandate, provider, model)

        def work(conn: Connection) -> bool:
            self._authorize(conn, mandate, Scope.ADMIN)
            found = prices.markup(conn, *scope)
            if found is None:
                return False
            prices.delete_markup(conn, *scope)
            target = f"{provider or '*'}/{model or '*'}"
            self._auditor(conn, mandate, "markup.clear", target, {"percent": found.percent}, None)
            return True

        return self._write(work)

    def markups(self, mandate: str | None = None) -> list[Markup]:
        """The platform's markups, or (with ``mandate``) that mandate's own,
        least specific first."""

        def work(conn: Connection) -> list[Markup]:
            self._authorize(conn, mandate, Scope.READ)  # None: the platform's own settings
            if mandate is not None:
                check_name(mandate, "mandate")
            return [
                Markup(
                    Decimal(r.percent), mandate, r.provider or None, r.model or None, r.updated_at
                )
                for r in prices.markups(conn, mandate)
            ]

        return self._read(work)

    def markup_for(self, mandate: str | None, provider: str | None, model: str | None) -> Decimal:
        """The markup in percent for a call, the most specific set, in this order:
        mandate + provider + model, mandate + provider, mandate (any),
        platform provider + model, platform provider, platform (any), and
        ``DEFAULT_MARKUP_PERCENT`` (50) when none is set. Names match exactly
        as given."""
        if mandate is not None:
            check_name(mandate, "mandate")
        for name, value in (("provider", provider), ("model", model)):
            if value is not None:
                check_searchable(value, name, max_length=MODEL_MAX_LENGTH)

        def work(conn: Connection) -> Decimal:
            if mandate is not None:
                self._guard_call_cost(conn, mandate)
            return markup_in_force(conn, mandate, provider, model)[0]

        return self._read(work)


def markup_in_force(
    conn: Connection, mandate: str | None, provider: str | None, model: str | None
) -> tuple[Decimal, dict[str, Any]]:
    """The markup for a call and how a charge's breakdown names where it came
    from (``scope`` ``mandate``, ``platform`` or ``default``)."""
    rows = prices.markups_matching(conn, mandate, provider or "", (model or "") if provider else "")
    best: tuple[int, Decimal, dict[str, Any]] | None = None
    for row in rows:
        rank = markup_precedence(
            of_mandate=row.scope == "mandate", provider=row.provider, model=row.model
        )
        if best is None or rank < best[0]:
            best = (
                rank,
                Decimal(row.percent),
                {
                    "scope": row.scope,
                    "mandate": mandate if row.scope == "mandate" else None,
                    "provider": row.provider or None,
                    "model": row.model or None,
                },
            )
    if best is None:
        return DEFAULT_MARKUP_PERCENT, {"scope": "default"}
    return best[1], best[2]


def _markup_scope(mandate: str | None, provider: str | None, model: str | None) -> _MarkupScope:
    """A markup's scope, checked; a model needs its provider."""
    if mandate is not None:
        check_name(mandate, "mandate")
    if model is not None and provider is None:
        raise InvalidRequest("A markup for a model must name its provider.", field="provider")
    prov = "" if provider is None else check_label(provider, "provider", PROVIDER_MAX_LENGTH)
    mod = "" if model is None else check_label(model, "model", MODEL_MAX_LENGTH)
    return mandate, prov, mod
