"""Request bodies and query filters. Money is a decimal *string* in JSON
("0.50"), never a JSON number: a number would pass through binary floating
point on the way."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from aibill.domain.errors import InvalidRequest
from aibill.domain.model import Entry, HistoryFilters, UsageFilters
from aibill.domain.text import text_problem
from aibill.domain.times import RANGE_TEXT, check_time


def _in_range(value: datetime) -> datetime:
    """A time the ledger can store (see ``aibill.domain.times``), as given."""
    try:
        check_time(value, "time")
    except InvalidRequest as exc:
        raise ValueError(exc.message.removeprefix("time ")) from None
    return value


Time = Annotated[
    datetime,
    AfterValidator(_in_range),
    Field(description=f"ISO 8601 with an offset (or Z), {RANGE_TEXT} in UTC."),
]

Money = Annotated[
    str,
    # [0-9], not \d: \d also matches other scripts' digits ("١٢").
    StringConstraints(pattern=r"^[0-9]{1,13}(\.[0-9]{1,6})?$", max_length=24),
    Field(
        description='A decimal string with at most six decimals, e.g. "0.50".', examples=["0.50"]
    ),
]
ProviderCost = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{1,7}(\.[0-9]{1,12})?$", max_length=20),
    Field(
        description="What the provider charged, a decimal string with at most 12 decimals, "
        'e.g. "0.10"; converted and marked up like a priced call.',
        examples=["0.10"],
    ),
]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")]


def _text_rule(value: str, *, multiline: bool) -> str:
    """concepts.md rule 12 on a field (see ``aibill.domain.text``; the service checks
    again): valid Unicode, no control characters (prose: but tab and line feed)."""
    problem = text_problem(value, multiline=multiline)
    if problem is not None:
        index, what = problem
        raise ValueError(f"has {what} at position {index + 1}; text may not contain it")
    return value


def _line(value: str) -> str:
    return _text_rule(value, multiline=False)


def _prose(value: str) -> str:
    return _text_rule(value, multiline=True)


LINE = AfterValidator(_line)
PROSE = AfterValidator(_prose)
Tag = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"\S"), LINE]
ShortTag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"\S"), LINE]
Text = Annotated[str, StringConstraints(max_length=500), PROSE]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"\S"), LINE]


def _metadata_value(value: str | int) -> str | int:
    if isinstance(value, int):
        if abs(value) > 10**18 - 1:
            raise ValueError("must be an integer of at most 18 digits")
        return value
    if len(value) > 500:
        raise ValueError("may have at most 500 characters")
    return _prose(value)


MetadataValue = Annotated[str | int, AfterValidator(_metadata_value)]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue] | None,
    Field(
        default=None,
        max_length=32,
        description="At most 32 keys (1-64 characters each), each with a text of at most 500"
        " characters or an integer of at most 18 digits.",
    ),
]
Tokens = Annotated[int, Field(ge=0, le=10**12)]


BillingModelName = Literal["unlimited", "prepay_mandate", "prepay_user"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MandateIn(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"id": "acme", "billing_model": "prepay_mandate", "currency": "CHF"}]
        },
    )

    id: Name
    billing_model: BillingModelName = "prepay_mandate"
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["CHF"])] = "CHF"


class BillingModelIn(Body):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"billing_model": "prepay_user"}]}
    )

    billing_model: BillingModelName


class UserIn(Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"id": "alice"}]})

    id: Name


class MemberIn(Body):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"user": "alice", "role": "member"}]}
    )

    user: Name
    role: Name | None = "member"


class CreditIn(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"amount": "100.00", "reason": "payment", "description": "Invoice 2026-11"}
            ]
        },
    )

    amount: Money
    user: Name | None = None
    reason: Annotated[str, StringConstraints(max_length=64), LINE] = "payment"
    description: Text | None = None
    corrects: Annotated[str, StringConstraints(max_length=64), LINE] | None = None


class UsageIn(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"input_tokens": 1200, "output_tokens": 512, "cache_read_tokens": 1000}]
        },
    )

    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    cache_read_tokens: Tokens = 0
    cache_write_tokens: Tokens = 0
    input_audio_tokens: Tokens = 0
    output_audio_tokens: Tokens = 0
    requests: Annotated[int, Field(ge=0, le=10**6)] = 1


class Tags(Body):
    provider: ShortTag | None = None
    model: Tag | None = None
    feature_code: ShortTag | None = None
    feature_instance: Tag | None = None
    workflow_id: Tag | None = None


class HoldIn(Tags):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "user": "alice",
                    "provider": "openai",
                    "model": "gpt-4o",
                    "input_tokens": 1200,
                    "max_output_tokens": 800,
                    "feature_code": "chatplayground",
                    "feature_instance": "fi-1",
                    "workflow_id": "wf-9",
                }
            ]
        },
    )

    amount: Money | None = None
    user: Name | None = None
    input_tokens: Tokens | None = None
    max_output_tokens: Tokens | None = None
    ttl_s: Annotated[int, Field(ge=1, le=7 * 24 * 3600)] = 900
    metadata: Metadata = None


class CaptureIn(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"usage": {"input_tokens": 1200, "output_tokens": 512}}]},
    )

    amount: Money | None = None
    usage: UsageIn | None = None
    description: Text | None = None


class UsageRecordIn(Tags):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "user": "alice",
                    "provider": "anthropic",
                    "model": "claude-sonnet-4-5",
                    "usage": {"input_tokens": 5000, "output_tokens": 300},
                    "already_happened": True,
                }
            ]
        },
    )

    amount: Money | None = None
    usage: UsageIn | None = None
    provider_cost: ProviderCost | None = None
    provider_currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["USD"])] | None = (
        Field(default=None, description="The provider cost's currency (default USD).")
    )
    user: Name | None = None
    already_happened: bool = False
    description: Text | None = None
    metadata: Metadata = None


class CheckIn(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"estimate": "0.0132", "user": "alice", "provider": "openai"},
                {
                    "user": "alice",
                    "provider": "openai",
                    "model": "gpt-4o",
                    "input_tokens": 1200,
                    "max_output_tokens": 800,
                },
            ]
        },
    )

    estimate: Money | None = None
    user: Name | None = None
    provider: ShortTag | None = None
    model: Tag | None = None
    input_tokens: Tokens | None = None
    max_output_tokens: Tokens | None = None
    feature_instance: Tag | None = None


class EstimateIn(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "provider": "openai",
                    "model": "gpt-4o",
                    "input_tokens": 1200,
                    "max_output_tokens": 800,
                }
            ]
        },
    )

    provider: ShortTag
    model: Tag
    input_tokens: Tokens
    max_output_tokens: Tokens
    at: Time | None = Field(
        default=None, description="Price at this time (default: now), timezone-aware."
    )


# ------------------------------------------------------------- query filters


class UsageQuery(BaseModel):
    """The filters of a usage report, as query parameters."""

    since: Time | None = None
    until: Time | None = None
    user: str | None = None
    provider: str | None = None
    model: str | None = None
    feature_code: str | None = None
    feature_instance: str | None = None
    workflow_id: str | None = None

    def filters(self) -> UsageFilters:
        return cast(UsageFilters, self.model_dump())


class HistoryQuery(UsageQuery):
    """The filters of the history, as query parameters: a usage report's, and
    the account, kind, reason and hold."""

    account: str | None = None
    kind: str | None = None
    reason: str | None = None
    hold_id: str | None = None

    def filters(self) -> HistoryFilters:
        return cast(HistoryFilters, self.model_dump())


class UsageBatchRecordIn(UsageRecordIn):
    """One record of a batch: a usage record with its mandate and its own key."""

    model_config = ConfigDict(extra="forbid")

    mandate: Name
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=200), LINE]


class UsageBatchIn(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "records": [
                        {
                            "mandate": "acme",
                            "idempotency_key": "call-1",
                            "user": "alice",
                            "provider": "openai",
                            "model": "gpt-4o",
                            "usage": {"input_tokens": 1200, "output_tokens": 300},
                            "already_happened": True,
                        },
                        {"mandate": "acme", "idempotency_key": "call-2", "amount": "0.25"},
                    ]
                }
            ]
        },
    )

    records: Annotated[list[UsageBatchRecordIn], Field(min_length=1, max_length=1000)]


class RecordResult(BaseModel):
    """One record's outcome: its entry, or the problem that refused it."""

    entry: Entry | None = None
    error: dict[str, Any] | None = Field(
        default=None, description="The error's `code`, `message` and `details`."
    )


class UsageBatchOut(BaseModel):
    results: list[RecordResult]
