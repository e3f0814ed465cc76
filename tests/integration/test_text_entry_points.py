"""Every library entry point that takes text checks it first (DESIGN rule 12):
each public method of the ledger, its pricing, access and keys, called with a
NUL or a lone surrogate in any one text parameter, is refused with
``InvalidRequest`` naming a field (a yes/no question answers "no"), on SQLite
and PostgreSQL alike: never a database error (PostgreSQL refused NUL with a
retryable ``store_unavailable``), never a ``UnicodeEncodeError``, and nothing
is written."""

from __future__ import annotations

import inspect
import io
import uuid
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

from sqlalchemy import func, select

from aibill import Billing
from aibill.domain import errors as e
from aibill.store.schema import metadata as schema

BAD = ["\x00", "\ud800", "ok\x00"]
SKIP = {"close", "bound", "as_principal", "authenticate", "recall", "import_exchange_rates"}
YES_OR_NO = {"is_provider_allowed", "may"}  # fail closed: a name nobody has is "no"


def _defaults(hold_id: str) -> dict[str, Any]:
    """A valid value for each required parameter, by name."""
    return {
        "mandate": "acme",
        "user": "alice",
        "amount": D("1"),
        "estimate": D("1"),
        "provider": "openai",
        "model": "gpt-4o",
        "hold_id": hold_id,
        "role": "member",
        "context": "resource",
        "item": "resource.aicore.openai",
        "permissions": ["view"],
        "base": "USD",
        "quote": "CHF",
        "rate": D("1"),
        "percent": D("10"),
        "input_mtok": "1",
        "output_mtok": "1",
        "key_id": "abc",
        "rule_id": "r1",
        "input_tokens": 1,
        "max_output_tokens": 1,
        "need": "billing:read",
        "billing_model": "unlimited",
        "at": datetime(2025, 1, 1, tzinfo=UTC),
        "enabled": True,
        "out": io.StringIO(),
        "currency": "CHF",
        "usage": None,
        "provider_cost": D("1"),
    }


def _calls(billing: Billing, hold_id: str) -> list[tuple[str, Any, dict[str, Any], str]]:
    """(name, method, arguments, the text parameter) for every public method
    and every parameter typed as text, with that parameter left to fill."""
    found = []
    defaults = _defaults(hold_id)
    for owner, obj in (
        ("billing", billing),
        ("pricing", billing.pricing),
        ("access", billing.access),
        ("keys", billing.keys),
    ):
        for name, method in inspect.getmembers(obj, inspect.ismethod):
            if name.startswith("_") or name in SKIP:
                continue
            params = inspect.signature(method).parameters
            if "conn" in params:  # runs inside a caller's transaction, after its checks
                continue
            for target, p in params.items():
                if "str" not in str(p.annotation) or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    continue
                args: dict[str, Any] = {}
                for other, q in params.items():
                    if other == target or q.kind in (q.VAR_KEYWORD, q.VAR_POSITIONAL):
                        continue
                    if other == "idempotency_key":
                        args[other] = ""  # filled per call
                    elif q.default is inspect.Parameter.empty:
                        args[other] = defaults[other]
                found.append((f"{owner}.{name}", method, args, target))
    return found


def _rows(billing: Billing) -> tuple[int, ...]:
    with billing.engine.connect() as conn:
        return tuple(
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in schema.sorted_tables
        )


def test_every_text_parameter_of_every_operation_is_checked_first(billing: Billing) -> None:
    billing.add_user("alice")
    billing.create_mandate("acme", billing_model="unlimited")
    billing.add_member("acme", "alice", role="admin")
    billing.access.register_provider("openai")
    hold_id = billing.hold("acme", amount=D("1"), idempotency_key="h0").id
    calls = _calls(billing, hold_id)
    assert len(calls) > 120, len(calls)  # the sweep sees the whole surface
    before = _rows(billing)
    wrong = []
    for label, method, args, target in calls:
        for bad in BAD:
            kwargs = dict(args)
            if "idempotency_key" in kwargs:
                kwargs["idempotency_key"] = f"k-{uuid.uuid4().hex}"
            kwargs[target] = bad
            try:
                answer = method(**kwargs)
            except e.InvalidRequest as err:
                if not err.details.get("field"):
                    wrong.append((label, target, bad, "no field named"))
                continue
            except Exception as err:  # what this test exists to catch
                wrong.append((label, target, bad, f"{type(err).__name__}: {err}"[:120]))
                continue
            if not (label.endswith(tuple(YES_OR_NO)) and answer is False):
                wrong.append((label, target, bad, f"answered {answer!r}"))
    assert wrong == []
    assert _rows(billing) == before
