"""A realistic month of demo data: three mandates, their people, prices and usage.

``fill(billing)`` writes, through the library's public operations only, what a
platform looks like after a month of use, so that a newcomer (and the web
dashboard's browser tests) see real balances, reports and audit records at once:

* **Mandates**, one per billing model: ``acme`` (``prepay_mandate``, CHF, a
  Swiss engineering firm sharing one prepaid pool), ``globex`` (``prepay_user``,
  EUR, every person has a prepaid wallet) and ``initech`` (``unlimited``, USD,
  invoiced at the end of the month).
* **People**: fifteen users. Each mandate has one ``admin``, three members
  (at globex: ``staff``) and one ``viewer``; ``marco.rossi`` works for both
  acme and globex; ``platform.ops`` is a system admin and a member of nothing.
* **Access**: the providers ``openai``, ``anthropic``, ``google``, ``mistral``
  and ``selfhosted`` (the platform's own GPU cluster) are registered. globex
  keeps Google out: its people get the custom role ``staff``, whose rules
  grant every provider but ``google`` (rules only grant, so a narrower role
  replaces ``member``). acme lets its viewers use Mistral (a rule for
  ``viewer``), and its finance viewer ``nina.huber`` summarises with it.
* **Prices**: USD->CHF and USD->EUR rates from the day before the month, each
  changed twice during it; the 50 % default markup, 35 % for initech (a
  mandate markup) and 40 % on anthropic (a provider markup); a platform price
  for the internal model ``selfhosted/llama-3.3-70b-internal`` and a
  negotiated acme price for ``anthropic/claude-sonnet-4-5`` from the tenth day
  on.
* **Money**: a payment into every prepaid account the day before the month
  starts (one per started 1,000 records, so that any ``records`` fits) and
  top-ups later (``payment`` and ``admin`` credits); initech, unlimited, runs
  negative and is invoiced. Monthly and daily spending limits for one user and
  one feature instance.
* **Usage**: ``records`` priced usage records (tokens, provider, model,
  feature code and instance, user) over the 30 days up to ``now``: weekdays
  much busier than weekends, people in their working hours (acme and globex
  in Central Europe, initech on the US east coast), nightly automation runs,
  cheap models often and expensive ones rarely. Twelve holds: eight captured,
  two released (the call failed) and two still in flight at ``now``: calls
  running for under three minutes, with the default 15 minutes to live, so a
  dashboard shows holds in flight.

The records are posted with ``already_happened=True``, as a gateway's
after-the-call record is: usage that happened is never refused, only marked.
Every prepaid account gets one payment per started 1,000 records, sized at
about twice what 1,000 records cost it (checked for seeds 1-20 and up to
6,000 records), so no entry is marked short. The spending limits (5 CHF a
month for marco.rossi at acme, 1 EUR a day for globex's invoice extraction)
leave room at the default 3,000 records; with many more, usage past them is
recorded and marked ``over_limit``. One wallet is deliberately thin:
``lea.martin`` at globex pays in 0.40 EUR per 1,000 records and uses cheap
models only, so her wallet ends the month at well under a euro, next to
colleagues with several euros (a hold for a big call would be refused there).

Time: the data is dated by a second ledger on the same engine whose clock is
a :class:`~aibill.ManualClock` moved from event to event, in time order;
exchange rates start before the records that use them.

Speed: one transaction per record, so on SQLite the commit's fsync dominates:
3,000 records take 7-9 s (``synchronous=FULL``, the default); a second run,
all replays, about 1.5 s.

Idempotent: every write carries a key derived from the seed and the record's
(or credit's, or hold's) index, and the arguments depend on the seed and the
index only, never on ``now``; settings whose calls would write again (provider
registry, roles, rules, markups, limits, rates, custom prices) are skipped
when the demo's value is already there. So ``fill`` run again writes nothing,
and its summary says everything was already there; run later with another
``now`` it replays the first run. The same seed gives the same data, apart
from timestamps, which are relative to ``now``.

It fills only a ledger it made: mandates named as its own that it did not
create (the README's ``acme``, say) make it refuse with ``DemoWouldMerge``
and write nothing.

Note: this adds a system admin (``platform.ops``), so ``aibill serve`` started
on the filled database for the first time creates no bootstrap key; create
a key for ``platform.ops`` with ``billing.keys.create_key`` instead.
"""

from __future__ import annotations

from aibill.demo_data.cast import DAYS as DAYS
from aibill.demo_data.cast import PENDING_AGES_S as PENDING_AGES_S
from aibill.demo_data.cast import PENDING_TTL_S as PENDING_TTL_S
from aibill.demo_data.cast import RATE_SOURCE as RATE_SOURCE
from aibill.demo_data.cast import RECORDS_PER_TRANCHE as RECORDS_PER_TRANCHE
from aibill.demo_data.cast import SYSADMIN_USER as SYSADMIN_USER
from aibill.demo_data.cast import THIN_WALLET as THIN_WALLET
from aibill.demo_data.filler import fill
from aibill.demo_data.summary import DemoSummary, DemoWouldMerge, Money, Tally

__all__ = ["DemoSummary", "DemoWouldMerge", "Money", "Tally", "fill"]
