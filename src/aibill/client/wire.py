"""The client's wire format: requests in the service's terms (path segments,
money and decimals as exact strings, JSON bodies and query parameters), and
answers read back into aibill's value types exactly (decimal strings become
``Decimal`` without passing through a float, timestamps aware ``datetime``)."""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Final, TypeVar, Union, get_args, get_origin, get_type_hints
from urllib.parse import quote

from aibill.domain import errors as e
from aibill.domain.batch import UsageRecord
from aibill.domain.keys import ApiKey, CreatedKey
from aibill.domain.money import from_micros, to_decimal, to_micros
from aibill.domain.prices import check_provider_cost
from aibill.domain.reports import PERIOD_KEYS, UsageRow
from aibill.domain.usage import Usage

T = TypeVar("T")


# ------------------------------------------------------------------ requests


def seg(value: str) -> str:
    """A path segment, percent-encoded (hold ids keep their ':')."""
    return quote(value, safe=":@")


def money(value: object, field: str) -> str:
    """Money as the exact decimal string the service takes; floats, negative
    amounts and more than six decimals are refused as the library does."""
    return str(from_micros(to_micros(value, field=field, allow_zero=True)))


def usage_fields(usage: object) -> dict[str, int]:
    if not isinstance(usage, Usage):
        raise e.InvalidRequest("usage must be an aibill.Usage.", field="usage")
    return {f.name: getattr(usage, f.name) for f in fields(Usage)}


def decimal_text(value: object, field: str) -> str:
    """A rate, percent or price as the exact decimal string the service takes;
    floats are refused as the library refuses them."""
    return format(to_decimal(value, field=field), "f")


def json_body(**values: Any) -> dict[str, Any]:
    """A JSON body: the values given (not None), times as ISO 8601."""
    return {
        k: v.isoformat() if isinstance(v, datetime) else v
        for k, v in values.items()
        if v is not None
    }


def query_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Query parameters: the values given (not None), times as ISO 8601, enums
    by value, booleans as ``true``/``false``, sequences repeated."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, Enum):
            return str(value.value)
        return str(value)

    return {
        name: [text(v) for v in value] if isinstance(value, list | tuple) else text(value)
        for name, value in params.items()
        if value is not None
    }


def user_path(mandate: str, user: str, *rest: str) -> str:
    tail = "".join(f"/{seg(part)}" for part in rest)
    return f"/v1/mandates/{seg(mandate)}/users/{seg(user)}{tail}"


def keys_path(mandate: str | None, *rest: str) -> str:
    head = "/v1/keys" if mandate is None else f"/v1/mandates/{seg(mandate)}/keys"
    return head + "".join(f"/{seg(part)}" for part in rest)


def strings(answer: Any) -> list[str]:
    if not isinstance(answer, list) or not all(isinstance(x, str) for x in answer):
        raise malformed("a list of strings", answer)
    return answer


# ------------------------------------------------------------------- answers


def decode_json(content: bytes) -> Any:
    """JSON with every fractional number as ``Decimal``; NaN and infinities refused."""
    return json.loads(content, parse_float=Decimal, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number aibill sends")


def malformed(expected: str, got: object) -> e.AibillError:
    return e.AibillError(f"The aibill service answered with {got!r}, not {expected}.")


_HINTS: dict[type, dict[str, Any]] = {}


def _api_key_json(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "key_id": data.get("id")}


def _created_key_json(data: dict[str, Any]) -> dict[str, Any]:
    return {"secret": data.get("secret"), "info": data.get("key")}


def _usage_row_json(data: dict[str, Any]) -> dict[str, Any]:
    # A group's period (day, week, month) is a datetime; its other keys are tags.
    keys = data.get("keys")
    if not isinstance(keys, dict):
        return data
    periods = {
        name: parse_datetime(value, f"UsageRow.keys[{name!r}]")
        for name, value in keys.items()
        if name in PERIOD_KEYS and value is not None
    }
    return {**data, "keys": {**keys, **periods}}


_WIRE: Final[dict[type, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    ApiKey: _api_key_json,
    CreatedKey: _created_key_json,
    UsageRow: _usage_row_json,
}
"""Where the service's JSON of a type differs from its fields (a key's ``id``)."""


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls)
    return hints


def parse(cls: type[T], data: Any) -> T:
    """One of aibill's value types from its JSON form, exactly: decimal strings
    become ``Decimal``, timestamps aware ``datetime``, enums their members."""
    if not isinstance(data, dict):
        raise malformed(f"a {cls.__name__}", data)
    wire = _WIRE.get(cls)
    if wire is not None:
        data = wire(data)
    hints = _hints(cls)
    values = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            values[f.name] = _value(hints[f.name], data[f.name], f"{cls.__name__}.{f.name}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise malformed(f"a {cls.__name__} ({exc})", data) from None


def _value(tp: Any, raw: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        if raw is None:
            return None
        options = [a for a in get_args(tp) if a is not type(None)]
        return _value(options[0], raw, where)
    if raw is None:
        return None
    if origin in (list, tuple, frozenset, set):
        if not isinstance(raw, list):
            raise malformed(f"a list for {where}", raw)
        item = (get_args(tp) or (Any,))[0]
        return origin(_value(item, x, where) for x in raw)
    if origin is dict:
        if not isinstance(raw, dict):
            raise malformed(f"an object for {where}", raw)
        _, item = get_args(tp) or (str, Any)
        return {k: _value(item, v, f"{where}[{k!r}]") for k, v in raw.items()}
    if tp is Decimal:
        return parse_decimal(raw, where)
    if tp is datetime:
        return parse_datetime(raw, where)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(raw)
    if isinstance(tp, type) and is_dataclass(tp):
        return parse(tp, raw)
    return raw  # str, int, bool and JSON objects as they are (decimals in them are Decimal)


def parse_decimal(raw: Any, where: str) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise malformed(f"a decimal string for {where}", raw)
    try:
        number = Decimal(raw)
    except InvalidOperation:
        raise malformed(f"a decimal string for {where}", raw) from None
    if not number.is_finite():
        raise malformed(f"a finite decimal for {where}", raw)
    return number


def parse_datetime(raw: Any, where: str) -> datetime:
    if not isinstance(raw, str):
        raise malformed(f"a timestamp for {where}", raw)
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise malformed(f"a timestamp for {where}", raw) from None
    # The service speaks UTC; a timestamp without an offset is read as UTC.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def record_fields(record: object) -> dict[str, Any]:
    """A batch record as the service takes it: its mandate and key, and the
    body of a single usage record."""
    if not isinstance(record, UsageRecord):
        raise e.InvalidRequest("Each record must be an aibill UsageRecord.", field="records")
    return {"mandate": record.mandate, "idempotency_key": record.idempotency_key} | usage_body(
        record
    )


def usage_body(record: UsageRecord) -> dict[str, Any]:
    """The body of ``POST .../usage``: money as exact decimal strings."""
    cost = record.provider_cost
    return json_body(
        amount=None if record.amount is None else money(record.amount, "amount"),
        usage=None if record.usage is None else usage_fields(record.usage),
        provider_cost=None if cost is None else format(check_provider_cost(cost).normalize(), "f"),
        provider_currency=record.provider_currency,
        user=record.user,
        provider=record.provider,
        model=record.model,
        feature_code=record.feature_code,
        feature_instance=record.feature_instance,
        workflow_id=record.workflow_id,
        already_happened=bool(record.already_happened),
        description=record.description,
        metadata=None if record.metadata is None else dict(record.metadata),
    )
