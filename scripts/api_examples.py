"""Write src/aibill/api/examples.json: a real response of every operation that
has no request body, recorded from a scripted session on a throwaway ledger.

    .venv/bin/python scripts/api_examples.py
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

import aibill
from aibill.api import create_app

OUT = Path(__file__).resolve().parents[1] / "src" / "aibill" / "api" / "examples.json"


def main() -> None:
    clock = aibill.ManualClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
    billing = aibill.connect(f"sqlite:///{tempfile.mkdtemp()}/examples.db", clock=clock)
    billing.add_user("admin")
    billing.access.add_sysadmin("admin")
    root = billing.keys.create_key(user="admin", mandate=None, scopes=["billing:admin"]).secret
    billing.create_mandate("acme", currency="CHF")
    billing.add_user("alice")
    billing.add_member("acme", "alice", role="admin")
    billing.access.register_provider("openai", display_name="OpenAI")
    billing.pricing.set_exchange_rate(
        "USD", "CHF", Decimal("0.80"), valid_from=datetime(2026, 1, 1, tzinfo=UTC)
    )
    billing.pricing.set_markup(Decimal("20"), mandate="acme", provider="openai")
    billing.pricing.set_custom_price(
        "private", "tuned-1", input_mtok=Decimal("1"), output_mtok=Decimal("2"), mandate="acme"
    )
    rule = billing.access.add_rule("acme", "viewer", "resource", "resource.aicore.openai", ["view"])
    billing.access.define_role("acme", "auditor", "reads the books")
    key = billing.keys.create_key(user="alice", mandate="acme", scopes=["billing:use"])
    spare = billing.keys.create_key(user="admin", mandate=None, scopes=["billing:read"])
    billing.set_spending_limit("acme", Decimal("50"), user="alice", period="month")
    billing.credit("acme", Decimal("100"), idempotency_key="pay-1")
    hold = billing.hold(
        "acme",
        user="alice",
        provider="openai",
        model="gpt-4o",
        input_tokens=1200,
        max_output_tokens=800,
        idempotency_key="call-1",
    )
    billing.capture(hold.id, usage=aibill.Usage(input_tokens=1200, output_tokens=512))
    open_hold = billing.hold("acme", amount=Decimal("0.50"), user="alice", idempotency_key="call-2")
    auth = {"Authorization": f"Bearer {root}"}
    calls: list[tuple[str, str, str]] = [
        ("get", "/v1/mandates", "/v1/mandates"),
        ("get", "/v1/mandates/{mandate}", "/v1/mandates/acme"),
        ("get", "/v1/users", "/v1/users"),
        ("get", "/v1/mandates/{mandate}/members", "/v1/mandates/acme/members"),
        ("get", "/v1/mandates/{mandate}/accounts", "/v1/mandates/acme/accounts"),
        ("get", "/v1/mandates/{mandate}/holds", "/v1/mandates/acme/holds?limit=10"),
        ("get", "/v1/holds/{hold_id}", f"/v1/holds/{open_hold.id}"),
        ("get", "/v1/mandates/{mandate}/balance", "/v1/mandates/acme/balance"),
        ("get", "/v1/mandates/{mandate}/entries", "/v1/mandates/acme/entries?limit=1"),
        ("get", "/v1/verify", "/v1/verify"),
        ("get", "/v1/mandates/{mandate}/verify", "/v1/mandates/acme/verify"),
        ("get", "/v1/exchange-rates", "/v1/exchange-rates"),
        ("get", "/v1/exchange-rates/{base}/{quote}", "/v1/exchange-rates/USD/CHF"),
        ("get", "/v1/markups/effective", "/v1/markups/effective?mandate=acme&provider=openai"),
        ("get", "/v1/markups", "/v1/markups?mandate=acme"),
        ("get", "/v1/prices", "/v1/prices?mandate=acme"),
        ("get", "/v1/prices/{provider}/{model:path}", "/v1/prices/openai/gpt-4o?mandate=acme"),
        ("get", "/v1/providers", "/v1/providers"),
        (
            "get",
            "/v1/mandates/{mandate}/users/{user}/providers",
            "/v1/mandates/acme/users/alice/providers",
        ),
        (
            "get",
            "/v1/mandates/{mandate}/users/{user}/providers/{provider}",
            "/v1/mandates/acme/users/alice/providers/openai",
        ),
        ("get", "/v1/mandates/{mandate}/users/{user}/roles", "/v1/mandates/acme/users/alice/roles"),
        ("get", "/v1/mandates/{mandate}/rules", "/v1/mandates/acme/rules"),
        ("get", "/v1/mandates/{mandate}/roles", "/v1/mandates/acme/roles"),
        ("get", "/v1/sysadmins/{user}", "/v1/sysadmins/admin"),
        ("get", "/v1/mandates/{mandate}/keys", "/v1/mandates/acme/keys"),
        (
            "get",
            "/v1/mandates/{mandate}/keys/{key_id}",
            f"/v1/mandates/acme/keys/{key.info.key_id}",
        ),
        ("get", "/v1/keys", "/v1/keys"),
        ("get", "/v1/keys/{key_id}", f"/v1/keys/{spare.info.key_id}"),
        ("get", "/v1/mandates/{mandate}/limits", "/v1/mandates/acme/limits"),
        ("get", "/v1/mandates/{mandate}/audit", "/v1/mandates/acme/audit?limit=2"),
        ("get", "/v1/audit", "/v1/audit?limit=2"),
        ("get", "/v1/users/{user}/balances", "/v1/users/alice/balances"),
        (
            "get",
            "/v1/mandates/{mandate}/usage-report",
            "/v1/mandates/acme/usage-report?group_by=day&group_by=provider",
        ),
        ("get", "/v1/mandates/{mandate}/entries.csv", "/v1/mandates/acme/entries.csv"),
        (
            "get",
            "/v1/mandates/{mandate}/usage-report.csv",
            "/v1/mandates/acme/usage-report.csv?group_by=provider",
        ),
        (
            "put",
            "/v1/mandates/{mandate}/users/{user}/roles/{role}",
            "/v1/mandates/acme/users/alice/roles/viewer",
        ),
        (
            "delete",
            "/v1/mandates/{mandate}/users/{user}/roles/{role}",
            "/v1/mandates/acme/users/alice/roles/viewer",
        ),
        ("delete", "/v1/markups", "/v1/markups?mandate=acme&provider=openai"),
        ("post", "/v1/keys/{key_id}/revoke", f"/v1/keys/{spare.info.key_id}/revoke"),
        (
            "post",
            "/v1/mandates/{mandate}/keys/{key_id}/revoke",
            f"/v1/mandates/acme/keys/{key.info.key_id}/revoke",
        ),
        ("post", "/v1/holds/{hold_id}/release", f"/v1/holds/{open_hold.id}/release"),
        (
            "delete",
            "/v1/mandates/{mandate}/rules/{rule_id}",
            f"/v1/mandates/acme/rules/{rule.rule_id}",
        ),
        ("get", "/healthz", "/healthz"),
        ("get", "/readyz", "/readyz"),
    ]
    examples: dict[str, Any] = {}
    with TestClient(create_app(billing, sweep_interval_s=0)) as client:
        for method, template, url in calls:
            r = client.request(method.upper(), url, headers=auth)
            ctype = r.headers.get("content-type", "")
            body: Any = r.json() if r.content and "json" in ctype else (r.text or None)
            examples[f"{method.upper()} {template}"] = {
                "status": r.status_code,
                "content_type": ctype.split(";")[0],
                "example": body,
            }
        r = client.post(
            "/v1/exchange-rates/import",
            content="base,quote,rate,valid_from\nEUR,CHF,0.95,2026-01-01\n",
            headers=auth,
        )
        examples["POST /v1/exchange-rates/import"] = {
            "status": r.status_code,
            "content_type": "application/json",
            "example": r.json(),
            "request": "base,quote,rate,valid_from\nEUR,CHF,0.95,2026-01-01\n",
        }
        r = client.delete("/v1/sysadmins/nobody", headers=auth)
        examples["DELETE /v1/sysadmins/{user}"] = {
            "status": 204,
            "content_type": "",
            "example": None,
        }
    OUT.write_text(json.dumps(examples, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(examples)} examples to {OUT}")


if __name__ == "__main__":
    main()
