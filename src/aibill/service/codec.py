"""Rows to value types, and value types to JSON snapshots for idempotent replay."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row

from aibill.domain.model import Entry, EntryKind, Hold, HoldStatus
from aibill.domain.money import MICRO, from_micros


def hold_from_row(row: Row[Any], currency: str) -> Hold:
    m = row._mapping
    captured = m["captured_micros"]
    return Hold(
        id=m["hold_id"],
        mandate=m["mandate_id"],
        account=m["account_id"],
        user=m["user_id"],
        amount=from_micros(m["amount_micros"]),
        currency=currency,
        status=HoldStatus(m["status"]),
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        resolved_at=m["resolved_at"],
        captured_amount=None if captured is None else from_micros(captured),
        entry_id=m["entry_id"],
        metadata=dict(m["metadata"] or {}),
        provider=m["provider"],
        model=m["model"],
        model_matched=m["model_matched"],
        feature_code=m["feature_code"],
        feature_instance=m["feature_instance"],
        workflow_id=m["workflow_id"],
        estimate=m["estimate"],
    )


def entry_from_row(row: Row[Any], currency: str) -> Entry:
    """The entry of a row; a row read without ``metadata`` or ``breakdown``
    (an export's page) gives an entry without them."""
    m = row._mapping
    # ``in`` first: a missing key's get() costs an exception inside SQLAlchemy.
    meta = dict(m["metadata"] or {}) if "metadata" in m else {}
    return Entry(
        id=m["entry_id"],
        mandate=m["mandate_id"],
        account=m["account_id"],
        kind=EntryKind(m["kind"]),
        amount=from_micros(m["amount_micros"]),
        currency=currency,
        reason=m["reason"],
        posted_at=m["posted_at"],
        balance_after=from_micros(m["balance_after_micros"]),
        user=m["user_id"],
        hold_id=m["hold_id"],
        over_balance=bool(m["over_balance"]),
        shortfall=from_micros(m["shortfall_micros"]),
        captured_after_expiry=bool(m["captured_after_expiry"]),
        corrects=m["corrects_entry_id"],
        description=m["description"],
        metadata=meta,
        provider=m["provider"],
        model=m["model"],
        model_matched=m["model_matched"],
        feature_code=m["feature_code"],
        feature_instance=m["feature_instance"],
        workflow_id=m["workflow_id"],
        input_tokens=m["input_tokens"],
        output_tokens=m["output_tokens"],
        cache_read_tokens=m["cache_read_tokens"],
        cache_write_tokens=m["cache_write_tokens"],
        provider_cost=_pico(m["provider_cost_pico"]),
        provider_currency=m["provider_currency"],
        price_source=m["price_source"],
        fx_rate=_exact(m["fx_rate"]),
        markup_percent=_exact(m["markup_percent"]),
        breakdown=m["breakdown"] if "breakdown" in m else None,  # noqa: SIM401 (see above)
        over_limit=m["over_limit"],
        provider_not_allowed=bool(m["provider_not_allowed"]),
    )


PICO = Decimal(10) ** 12


def _pico(value: int | None) -> Decimal | None:
    """Pico-units back to an exact Decimal, without trailing zeros."""
    if value is None:
        return None
    return _normal(Decimal(value) / PICO)


def _normal(value: Decimal) -> Decimal:
    # normalize() would write 100 as 1E+2; keep plain notation.
    text = format(value.normalize(), "f")
    return Decimal(text)


def _exact(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


_DECIMALS = {"amount", "captured_amount", "balance_after", "shortfall"}
_EXACT = {"provider_cost", "fx_rate", "markup_percent"}
_TIMES = {"created_at", "expires_at", "resolved_at", "posted_at"}


def snapshot(value: Hold | Entry) -> dict[str, Any]:
    """A JSON-ready copy of a result, to replay it exactly later."""
    out: dict[str, Any] = {"type": type(value).__name__}
    for name in value.__slots__:
        if name == "replayed":
            continue
        v = getattr(value, name)
        if (name in _DECIMALS or name in _EXACT) and v is not None:
            v = str(v)
        elif name in _TIMES and v is not None:
            v = v.isoformat()
        elif name in ("status", "kind"):
            v = str(v)
        out[name] = v
    return out


def from_snapshot(data: dict[str, Any]) -> Hold | Entry:
    data = dict(data)
    kind = data.pop("type")
    for name in _DECIMALS:
        if data.get(name) is not None:
            data[name] = Decimal(data[name]).quantize(MICRO)
    for name in _EXACT:
        if data.get(name) is not None:
            data[name] = Decimal(data[name])
    for name in _TIMES:
        if data.get(name) is not None:
            data[name] = datetime.fromisoformat(data[name])
    if kind == "Hold":
        data["status"] = HoldStatus(data["status"])
        return Hold(**data).as_replay()
    data["kind"] = EntryKind(data["kind"])
    return Entry(**data).as_replay()
