"""``aibill.Client``: the aibill service over HTTP, with the library's surface.

A gateway written against :class:`aibill.Billing` switches to a remote
service by changing one line::

    billing = aibill.connect("sqlite:///aibill.db")              # embedded
    billing = aibill.Client("https://billing.internal", api_key)  # remote

The methods have the library's names and arguments, take and return
``Decimal`` money, and return the library's value types (``Hold``, ``Entry``,
``Balance``, ``Page``, ``CheckResult``, ``Charge``, ``Mandate``, ``Drift``,
``Member``, ``AuditPage``, ``UsageRow``, ...), parsed exactly from the
service's JSON: money arrives as decimal strings and becomes ``Decimal``
without passing through a float, and every datetime is timezone-aware. The
administrative surface is there too, under the library's names:
``client.pricing``, ``client.access`` and ``client.keys`` mirror
``billing.pricing``, ``billing.access`` and ``billing.keys``, so the same code
administers an embedded ledger or a remote service.

Every write carries an ``Idempotency-Key`` (a fresh one unless the caller
gives their own), and a request that failed on the way (connection error,
timeout, or a 502/503/504 answer) is retried with the same key, so a retry
is applied at most once: it can never charge twice. Refusals and other
errors arrive as aibill's own exceptions (``InsufficientBalance``,
``PermissionDenied``, ...), chosen by the stable error code of the service's
problem document.

The client is ``aibill.client.remote`` (the ledger's methods), ``.parts``
(``client.pricing``, ``.access``, ``.keys``), ``.transport`` (requests,
retries, idempotency keys), ``.wire`` (the JSON format) and ``.errors``;
importing it loads httpx and aibill's domain types only.
"""

from __future__ import annotations

from aibill.client.errors import ServiceUnavailable
from aibill.client.parts import AccessClient, KeysClient, PricingClient
from aibill.client.remote import Client
from aibill.client.transport import RETRY_STATUSES
from aibill.domain.held import HeldCall

__all__ = [
    "RETRY_STATUSES",
    "AccessClient",
    "Client",
    "HeldCall",
    "KeysClient",
    "PricingClient",
    "ServiceUnavailable",
]
