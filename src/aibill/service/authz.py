"""Authorization: may this principal do this operation, and may this call make
the mandate pay (concepts.md rule 10)?

Every decision fails closed. A principal of another mandate learns nothing
about whether a mandate exists; a mandate's key learns nothing about user
names outside its mandate.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from aibill.domain import errors as e
from aibill.domain.model import check_name
from aibill.domain.principal import Principal, PrincipalKind, Scope
from aibill.domain.requests import scope_allows
from aibill.service.access import Access
from aibill.store import decisions


class Authz:
    """The decisions of one principal: scopes and roles, spending, providers."""

    __slots__ = ("_access", "principal")

    def __init__(self, principal: Principal, access: Access) -> None:
        self.principal = principal
        self._access = access

    def authorize(self, conn: Connection, mandate: str | None, need: Scope) -> None:
        """Refuse unless the principal may do a ``need`` operation on ``mandate``
        (``None``: the platform). Fails closed; a principal of another mandate
        learns nothing about whether ``mandate`` exists."""
        if mandate is not None:
            check_name(mandate, "mandate")  # before any query sees it (concepts.md rule 12)
        p = self.principal
        if p.kind is PrincipalKind.SYSTEM:
            return
        if not scope_allows(p.scopes, need):
            raise e.PermissionDenied(
                f"This key's scopes ({', '.join(sorted(p.scopes))}) do not allow {need.value}.",
                scope=need.value,
            )
        if p.kind is PrincipalKind.SYSADMIN:
            if p.user is not None and not decisions.is_sysadmin(conn, p.user):
                raise e.PermissionDenied("This principal is no longer a system admin.")
            return
        if mandate is None or p.mandate != mandate or p.user is None:
            raise e.PermissionDenied(
                "Not allowed for this principal (or there is no such mandate)."
            )
        if need is Scope.ADMIN and not _is_admin(conn, mandate, p.user):
            raise e.PermissionDenied(
                f"{p.user!r} is not an admin of mandate {mandate!r}.", user=p.user
            )
        if not decisions.is_member(conn, mandate, p.user):
            raise e.PermissionDenied(
                "Not allowed for this principal (or there is no such mandate)."
            )

    def sees_all_users(self, conn: Connection) -> bool:
        """May this principal learn whether a user name exists outside its
        mandate? The system and system admins may; a mandate's key may not."""
        try:
            self.authorize(conn, None, Scope.READ)
        except e.PermissionDenied:
            return False
        return True

    def use_or_read(self) -> Scope:
        """``billing:read`` for a principal that may read, else ``billing:use``."""
        p = self.principal
        if p.kind is PrincipalKind.SYSTEM or scope_allows(p.scopes, Scope.READ):
            return Scope.READ
        return Scope.USE

    def authorize_balance(self, conn: Connection, mandate: str, user: str | None) -> None:
        """``billing:read`` reads any account's balance. ``billing:use`` reads
        the balance of the account it bills: its own user's (or the pool), or
        any member's when it may spend, as a hold naming that user would."""
        p = self.principal
        need = self.use_or_read()
        self.authorize(conn, mandate, need)
        other = p.user is not None and user not in (None, p.user)
        if need is Scope.USE and p.kind is PrincipalKind.USER and other:
            assert p.user is not None
            refusal = self.spender(conn, mandate, p.user, None)
            if refusal is not None:
                raise refusal

    def spend_refusal(
        self,
        conn: Connection,
        mandate: str,
        user: str | None,
        provider: str | None,
        *,
        happened: bool = False,
        provider_ok: bool,
    ) -> e.SpendNotAllowed | None:
        """Why this call may not make the mandate pay, or None (concepts.md rule 10).

        Before the fact, the billed ``user`` needs a role that lets them spend
        when the call names no provider (with one, the provider rule has
        decided for them: ``provider_ok``). The principal's own user needs one
        always, even naming another user, unless the provider rule has just
        allowed that same user this call. The system and system admins are
        trusted. Usage that already happened is recorded whoever it names, but
        only by a principal that may spend.
        """
        if user is not None and provider is None and not happened:
            refusal = self.spender(conn, mandate, user, None)
            if refusal is not None:
                return refusal
        p = self.principal
        if p.kind is not PrincipalKind.USER or p.user is None:
            return None
        if user == p.user and provider is None and not happened:
            return None  # decided just above
        if provider is not None and provider_ok and user in (None, p.user):
            return None  # may use this provider: may pay for this call
        return self.spender(conn, mandate, p.user, provider)

    def spender(
        self, conn: Connection, mandate: str, user: str, provider: str | None
    ) -> e.SpendNotAllowed | None:
        """Why ``user`` may not spend (on ``provider``), or None when they may."""
        decision = self._access.spend_decision(conn, mandate, user, provider)
        if decision.allowed:
            return None
        return e.SpendNotAllowed(user, mandate, tuple(decision.roles), decision.reason)

    def capture_refusal(self, conn: Connection, mandate: str, row: Any) -> e.SpendNotAllowed | None:
        """A principal captures a hold billed to its own user, or any hold of
        the mandate if it may spend (on the hold's provider, when it names one).
        So a viewer's key cannot post another user's hold, for any amount."""
        p = self.principal
        if p.kind is not PrincipalKind.USER or p.user is None or row.user_id == p.user:
            return None
        return self.spender(conn, mandate, p.user, row.provider)

    def provider_refusal(
        self, conn: Connection, mandate: str, user: str | None, provider: str | None
    ) -> e.ProviderNotAllowed | None:
        """Why the call may not use ``provider``, or None when it may (concepts.md
        rule 10). The user asked about is ``user``, else the principal's own;
        with neither there is nobody to allow, and the answer is no."""
        if provider is None:
            return None
        who = user if user is not None else self.principal.user
        if who is None:
            return e.ProviderNotAllowed(
                provider, None, (), "the call names no user whose permissions to check"
            )
        decision = self._access.provider_decision(conn, mandate, who, provider)
        if decision.allowed:
            return None
        return e.ProviderNotAllowed(provider, who, tuple(decision.roles), decision.reason)


def _is_admin(conn: Connection, mandate: str, user: str) -> bool:
    """An admin of ``mandate``, or a system admin (who is one of every mandate)."""
    return decisions.has_role(conn, mandate, user, "admin") or decisions.is_sysadmin(conn, user)
