"""Request bodies and query filters. Money is a decimal *string* in JSON
("0.50"), never a JSON number: a number would pass through binary floating
point on the way."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from aibill.domain.model import HistoryFilters, UsageFilters

Money = Annotated[
    str,
    StringConstraints(pattern=r"^\d{1,13}(\.\d{1,6})?$", max_length=24),
    Field(
        description='A decimal string with at most six decimals, e.g. "0.50".', examples=["0.50"]
    ),
]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"\S")]
Text = Annotated[str, StringConstraints(max_length=500)]
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
    reason: str = "payment"
    description: Text | None = None
    corrects: str | None = None


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
    provider: Tag | None = None
    model: Tag | None = None
    feature_code: Tag | None = None
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
    metadata: dict[str, str | int] | None = Field(default=None, max_length=32)


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
    user: Name | None = None
    already_happened: bool = False
    description: Text | None = None
    metadata: dict[str, str | int] | None = Field(default=None, max_length=32)


class CheckIn(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"estimate": "0.0132", "user": "alice", "provider": "openai"}]
        },
    )

    estimate: Money
    user: Name | None = None
    provider: Tag | None = None
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

    provider: Tag
    model: Tag
    input_tokens: Tokens
    max_output_tokens: Tokens
    at: datetime | None = Field(
        default=None, description="Price at this time (default: now), timezone-aware."
    )


# ------------------------------------------------------------- query filters


class UsageQuery(BaseModel):
    """The filters of a usage report, as query parameters."""

    since: datetime | None = None
    until: datetime | None = None
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
