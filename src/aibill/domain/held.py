"""A placed hold that settles itself: what ``Billing.hold`` and ``Client.hold`` return.

Gateway code reads the same embedded and remote::

    with billing.hold("acme", user="alice", provider="openai", model="gpt-4o",
                      input_tokens=1200, max_output_tokens=800,
                      idempotency_key=request_id) as call:
        response = call_the_model(...)
        call.capture(aibill.Usage(input_tokens=..., output_tokens=...))

The hold is captured or released through the ledger that placed it, whatever
that ledger is: anything with :class:`HoldLedger`'s ``capture`` and
``release`` (the embedded :class:`aibill.Billing` or the HTTP
:class:`aibill.Client`).
"""

from __future__ import annotations

import logging
import types
from dataclasses import fields
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from aibill.domain import errors as e
from aibill.domain.model import Entry, Hold

if TYPE_CHECKING:  # for the annotations only: the catalog's Usage is not imported at run time
    from aibill.domain.usage import Usage

__all__ = ["HeldCall", "HoldLedger"]

log = logging.getLogger("aibill.held")

_HOLD_FIELDS = tuple(f.name for f in fields(Hold))
# What ``capture`` takes as an amount; anything else is passed on as the usage,
# for the ledger to check (it refuses what is not an ``aibill.Usage``).
_AMOUNT_TYPES = (Decimal, int, float, str)


class HoldLedger(Protocol):
    """A ledger that can capture and release a hold by its id."""

    def capture(
        self,
        hold_id: str,
        *,
        amount: Decimal | None = None,
        usage: Any = None,
        idempotency_key: str | None = None,
        description: str | None = None,
    ) -> Entry: ...

    def release(self, hold_id: str, *, idempotency_key: str | None = None) -> Hold: ...


class HeldCall(Hold):
    """A placed hold: the ``Hold`` as placed (all its fields, and equal to the
    same hold read back), which can capture or release itself, and a context
    manager for the common flow.

    Leaving the ``with`` block without a capture releases the hold, also when
    the block raises (the block's exception then propagates unchanged; if the
    release fails too, the exception gets a note saying so and the hold frees
    itself when it expires). The fields are those of the hold when it was
    placed; what happened to it since is in ``entry`` (after :meth:`capture`)
    and ``released`` (after :meth:`release`).
    """

    _ledger: HoldLedger | None = None
    entry: Entry | None = None
    released: Hold | None = None

    @classmethod
    def of(cls, ledger: HoldLedger, hold: Hold) -> HeldCall:
        """``hold``, settled through ``ledger``."""
        held = cls(**{name: getattr(hold, name) for name in _HOLD_FIELDS})
        held._set(_ledger=ledger)
        return held

    def _set(self, **values: Any) -> None:
        # The hold's own fields stay frozen; only what this object did changes.
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def _bound(self) -> HoldLedger:
        if self._ledger is None:  # a copy, e.g. from dataclasses.replace
            raise e.InvalidRequest(
                f"This copy of hold {self.id!r} is not tied to a ledger; "
                "capture or release it by id on the ledger.",
                field="hold_id",
            )
        return self._ledger

    def capture(
        self,
        usage_or_amount: Usage | Decimal,
        /,
        *,
        description: str | None = None,
        idempotency_key: str | None = None,
    ) -> Entry:
        """Post the call's real cost: its ``aibill.Usage`` (priced for the
        hold's provider and model) or an amount as ``Decimal``; returns the
        entry, also kept in ``entry``."""
        if isinstance(usage_or_amount, _AMOUNT_TYPES):
            entry = self._bound().capture(
                self.id,
                amount=usage_or_amount,
                description=description,
                idempotency_key=idempotency_key,
            )
        else:
            entry = self._bound().capture(
                self.id,
                usage=usage_or_amount,
                description=description,
                idempotency_key=idempotency_key,
            )
        self._set(entry=entry)
        return entry

    def release(self, *, idempotency_key: str | None = None) -> Hold:
        """Free the hold without a debit; returns the hold as it now is, also
        kept in ``released``."""
        released = self._bound().release(self.id, idempotency_key=idempotency_key)
        self._set(released=released)
        return released

    @property
    def resolved(self) -> bool:
        """Captured or released through this object."""
        return self.entry is not None or self.released is not None

    def __eq__(self, other: object) -> bool:
        # Equal to the same hold however it was read (get_hold, a replay, the client).
        if not isinstance(other, Hold):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _HOLD_FIELDS)

    __hash__ = Hold.__hash__

    def __enter__(self) -> HeldCall:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        if self.resolved:
            return
        if exc is None:
            self.release()
            return
        try:
            self.release()
        except Exception as failure:  # the block's own exception matters more
            log.warning("releasing hold %s failed: %s", self.id, failure)
            exc.add_note(
                f"aibill: releasing hold {self.id} failed ({failure!r}); it expires at "
                f"{self.expires_at.isoformat()}."
            )
