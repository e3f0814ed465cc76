"""Schemathesis against the served OpenAPI schema: whatever the generated
request, no response is a server error and every response matches the schema.

Driven through hypothesis directly (one property per operation) rather than
schemathesis' pytest plugin."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

import aibill
from aibill.api import create_app

# What the issue asks: no server error, and responses the schema describes.
# (A request the schema allows may still be refused by a rule the schema
# cannot say, such as "amount or tokens, not both": that refusal is a 4xx
# problem document the schema does describe.)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.mark.slow
def test_no_server_errors_and_responses_match(tmp_path: Path) -> None:
    billing = aibill.connect(f"sqlite:///{tmp_path / 'schema.db'}", sqlite_synchronous="OFF")
    billing.add_user("root")
    billing.access.add_sysadmin("root")
    billing.create_mandate("acme")
    key = billing.keys.create_key(user="root", mandate=None, scopes=["billing:admin"]).secret
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(billing, sweep_interval_s=0)
    )
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "k"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        check()
    billing.close()
