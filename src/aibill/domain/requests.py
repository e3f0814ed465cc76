"""What a request to the ledger may say, checked before anything is read or
written (concepts.md rule 12), and the forms its idempotency record keeps.

Pure functions: no database, no clock.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from aibill.domain import errors as e
from aibill.domain import rules
from aibill.domain.model import (
    MAX_DESCRIPTION_LENGTH,
    MAX_REASON_LENGTH,
    BillingModel,
    Entry,
    EntryKind,
    Tags,
    check_name,
)
from aibill.domain.money import from_micros, to_micros
from aibill.domain.principal import Scope
from aibill.domain.text import check_line, check_prose, check_searchable, check_text
from aibill.domain.times import check_time
from aibill.domain.usage import Usage

DEFAULT_HOLD_TTL_S = 900
MAX_HOLD_TTL_S = 7 * 24 * 3600
MAX_PAGE = 1000
MAX_METADATA_KEYS = 32
MAX_METADATA_VALUE = 500
MAX_ENTRY_ID = 64
MAX_HOLD_ID = 200
MAX_METADATA_INT = 10**18 - 1
MAX_FILTER_LENGTH = 200
CREDIT_REASONS = ("payment", "admin", "system", "refund", "adjustment")
PERIODS = rules.PERIODS


def check_ttl(ttl_s: object) -> None:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= MAX_HOLD_TTL_S:
        raise e.InvalidRequest(
            f"ttl_s must be a whole number of seconds from 1 to {MAX_HOLD_TTL_S}.", field="ttl_s"
        )


def check_page_limit(limit: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise e.InvalidRequest(f"limit must be from 1 to {MAX_PAGE}.", field="limit")


def check_description(description: str | None) -> None:
    if description is not None:
        check_prose(description, "description", max_length=MAX_DESCRIPTION_LENGTH)


def check_metadata(metadata: Mapping[str, str | int] | None) -> dict[str, str | int]:
    """Metadata as stored: at most 32 keys, short keys, values short texts or integers."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or len(metadata) > MAX_METADATA_KEYS:
        raise e.InvalidRequest(
            f"metadata must be a mapping of at most {MAX_METADATA_KEYS} keys.", field="metadata"
        )
    out: dict[str, str | int] = {}
    for k, v in metadata.items():
        if not isinstance(k, str) or not k:
            raise e.InvalidRequest(f"metadata key {k!r} is not a short string.", field="metadata")
        check_text(k, "metadata", label="A metadata key", max_length=MAX_REASON_LENGTH)
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise e.InvalidRequest(
                f"metadata[{k!r}] must be a string (at most {MAX_METADATA_VALUE} characters) "
                "or an integer.",
                field=f"metadata.{k}",
            )
        if isinstance(v, str):
            check_prose(v, f"metadata.{k}", max_length=MAX_METADATA_VALUE)
        elif abs(v) > MAX_METADATA_INT:
            raise e.InvalidRequest(
                f"metadata[{k!r}] must be an integer of at most 18 digits.",
                field=f"metadata.{k}",
            )
        out[k] = v
    return out


def check_filters(**filters: str | None) -> None:
    """Every text a read filters on is one both databases can compare."""
    for name, value in filters.items():
        if value is not None:
            check_searchable(value, name, max_length=MAX_FILTER_LENGTH)


def check_aware(value: datetime, name: str) -> datetime:
    """A timezone-aware time within the range the stores hold, in UTC."""
    return check_time(value, name)


def mandate_of(hold_id: object) -> str:
    """The mandate a hold id names (``<mandate>:hold_...``)."""
    if not isinstance(hold_id, str) or ":" not in hold_id:
        raise e.InvalidRequest(f"{hold_id!r} is not a hold id.", field="hold_id")
    check_line(hold_id, "hold_id", max_length=MAX_HOLD_ID)
    return hold_id.split(":", 1)[0]


def entry_kind(kind: str | EntryKind) -> EntryKind:
    try:
        return EntryKind(kind)
    except ValueError:
        raise e.InvalidRequest("kind must be 'credit' or 'debit'.", field="kind") from None


def billing_model(value: str | BillingModel) -> BillingModel:
    try:
        return BillingModel(value)
    except ValueError:
        raise e.InvalidRequest(
            f"billing_model must be one of {', '.join(m.value for m in BillingModel)}, "
            f"not {value!r}.",
            field="billing_model",
        ) from None


def check_period(period: str) -> None:
    if period not in PERIODS:
        raise e.InvalidRequest(
            f"period must be one of {', '.join(PERIODS)}, not {period!r}.", field="period"
        )


def limit_subject(user: str | None, feature_instance: str | None) -> tuple[str, str]:
    """A spending limit's ``(scope, subject)``: one user or one feature instance."""
    if (user is None) == (feature_instance is None):
        raise e.InvalidRequest(
            "A spending limit is for one user or one feature instance: give exactly one.",
            field="user",
        )
    if user is not None:
        return "user", check_name(user, "user")
    Tags(feature_instance=feature_instance)  # validates
    assert feature_instance is not None
    return "feature_instance", feature_instance


def limit_name(limit: e.LimitExceeded) -> str:
    """How an entry over a limit names it: ``scope:subject/period``."""
    d = limit.details
    return f"{d['scope']}:{d['subject']}/{d['period']}"[:64]


def scope_allows(scopes: frozenset[Scope], need: Scope) -> bool:
    """An admin key may do everything; otherwise a key does what its scopes
    name and no more: a use key does not read the mandate's history, reports
    or settings (concepts.md rule 10; the table in ``docs/api-keys.md``)."""
    if Scope.ADMIN in scopes:
        return True
    return need in scopes


def credit_request(
    micros: int, user: str | None, reason: str, description: str | None, corrects: str | None
) -> dict[str, Any]:
    """Check a credit's reason and texts; the request its idempotency record keeps."""
    if reason not in CREDIT_REASONS:
        raise e.InvalidRequest(
            f"reason must be one of {', '.join(CREDIT_REASONS)}, not {reason!r}.",
            field="reason",
        )
    check_description(description)
    if corrects is not None:
        check_line(corrects, "corrects", max_length=MAX_ENTRY_ID)
    return {
        "amount": str(from_micros(micros)),
        "user": user,
        "reason": reason,
        "description": description,
        "corrects": corrects,
    }


def usage_json(usage: Usage) -> dict[str, int]:
    """Token counts as an idempotency record keeps them."""
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "input_audio_tokens": usage.input_audio_tokens,
        "output_audio_tokens": usage.output_audio_tokens,
        "requests": usage.requests,
    }


def _tokens(usage: Entry | Usage) -> tuple[int | None, int | None, int | None, int | None]:
    return (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
    )


def same_capture(first: Entry, micros: int | None, usage: Usage | None) -> bool:
    """Does a second capture ask for what the first one posted? (rule 3, in
    :func:`aibill.domain.rules.same_capture`)"""
    first_tokens = None if first.input_tokens is None else _tokens(first)
    tokens = None if usage is None else _tokens(usage)
    first_micros = to_micros(first.amount, allow_zero=True)
    return rules.same_capture(first_micros, first_tokens, micros, tokens)


def refusal_from_dict(data: dict[str, Any]) -> e.Refused:
    """A stored refusal, rebuilt as the same error class with the same details."""
    details = dict(data.get("details", {}))
    code = data.get("code")
    if code == e.InsufficientBalance.code:
        return e.InsufficientBalance(
            account=details["account"],
            available=Decimal(details["available"]),
            required=Decimal(details["required"]),
            currency=details["currency"],
        )
    cls = e.REFUSAL_TYPES.get(str(code), e.Refused)
    err = cls.__new__(cls)
    e.AibillError.__init__(err, str(data.get("message", "refused")), **details)
    return err


def encode_cursor(entry: Entry) -> str:
    """The history cursor after ``entry``: its posting time and id."""
    raw = f"{entry.posted_at.isoformat()}|{entry.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, entry_id = raw.split("|", 1)
        when = check_time(datetime.fromisoformat(at), "cursor")
        if "\x00" in entry_id or len(entry_id) > MAX_ENTRY_ID:
            raise ValueError
        return when, entry_id
    except (ValueError, UnicodeDecodeError, e.InvalidRequest):
        raise e.InvalidRequest(
            "cursor is not one that history() returned.", field="cursor"
        ) from None
