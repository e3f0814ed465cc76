"""Administration: mandates, users, members, roles and rules, providers, API
keys, spending limits, markups, prices and exchange rates. The commands'
groups, names and examples are in :mod:`aibill.cli.admin_groups`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from aibill.cli.core import (
    EXIT_REFUSED,
    JsonFlag,
    Since,
    State,
    parse_money,
    parse_time,
    print_json,
    progress,
    say,
    show_record,
    show_table,
    use,
    whole,
)
from aibill.cli.ledger import BALANCE_COLUMNS

MandateOpt = Annotated[
    str | None, typer.Option("--mandate", "-m", help="One mandate (default: the platform).")
]
Decimal_ = Annotated[Decimal, typer.Argument(parser=parse_money)]
OptDecimal = Annotated[Decimal | None, typer.Option(parser=parse_money, metavar="DECIMAL")]
When = Annotated[
    datetime | None,
    typer.Option(parser=parse_time, metavar="TIME", help="Valid from (default: now)."),
]


# ------------------------------------------------------------------ mandates


def mandate_create(
    name: str,
    model: Annotated[
        str,
        typer.Option(
            "--model", "--billing-model", help="unlimited, prepay_mandate or prepay_user."
        ),
    ] = "prepay_mandate",
    currency: Annotated[str, typer.Option(help="ISO 4217 billing currency.")] = "CHF",
    as_json: JsonFlag = False,
) -> None:
    """Create a mandate (again with the same settings: nothing changes)."""
    st = use(as_json)
    made = st.backend().create_mandate(name, billing_model=model, currency=currency)
    show_record(st, made, title=f"mandate {made.id}")


MANDATE_COLUMNS: list[Any] = [
    ("mandate", "id"),
    ("billing model", "billing_model"),
    "currency",
    ("created", "created_at"),
]


def mandate_list(as_json: JsonFlag = False) -> None:
    """The mandates this key may see (all of them for a system admin)."""
    st = use(as_json)
    show_table(st, st.backend().mandates(), MANDATE_COLUMNS, empty="No mandates yet.")


def mandate_show(name: str, as_json: JsonFlag = False) -> None:
    """A mandate: its settings, accounts, members and spending limits."""
    st = use(as_json)
    backend = st.backend()
    found = backend.get_mandate(name)
    accounts = backend.accounts(name)
    members = backend.members(name)
    limits = backend.spending_limits(name)
    if st.json:
        print_json(
            st, {"mandate": found, "accounts": accounts, "members": members, "limits": limits}
        )
        return
    show_record(st, found, title=f"mandate {found.id}")
    show_table(st, accounts, BALANCE_COLUMNS, title="accounts", empty="No accounts yet.")
    show_table(
        st,
        members,
        ["user", "roles", ("joined", "joined_at")],
        title="members",
        empty="No members yet.",
    )
    show_table(st, limits, LIMIT_COLUMNS, title="spending limits", empty="No spending limits.")


def mandate_settings(
    name: str,
    billing_model: Annotated[
        str | None, typer.Option(help="Change to unlimited, prepay_mandate or prepay_user.")
    ] = None,
    overdraft: OptDecimal = None,
    user: Annotated[str | None, typer.Option(help="The wallet --overdraft applies to.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show a mandate's settings, or change its billing model or overdraft limit."""
    st = use(as_json)
    backend = st.backend()
    if billing_model is not None:
        changed = backend.set_billing_model(name, billing_model)
        say(st, f"{name} is now billed as {changed.billing_model.value}")
    if overdraft is not None:
        account = backend.set_overdraft_limit(name, overdraft, user=user)
        say(
            st,
            f"{name}/{account.account} may now go {account.overdraft_limit}"
            f" {account.currency} below zero",
        )
    found = backend.get_mandate(name)
    settings = {
        "mandate": found.id,
        "billing_model": found.billing_model,
        "currency": found.currency,
        "markup_percent": backend.pricing.markup_for(name, None, None),
        "overdraft_limits": {a.account: a.overdraft_limit for a in backend.accounts(name)},
        "spending_limits": len(backend.spending_limits(name)),
    }
    show_record(st, settings, title=f"settings of {name}")


# ------------------------------------------------------------------ users, members, roles


def user_add(name: str, as_json: JsonFlag = False) -> None:
    """Register a user identity (again: nothing changes)."""
    st = use(as_json)
    added = st.backend().add_user(name)
    print_json(st, {"user": added}) if st.json else say(st, f"user {added} is registered")


def user_list(as_json: JsonFlag = False) -> None:
    """Every user identity (the platform; a system admin's key)."""
    st = use(as_json)
    names = st.backend().users()
    show_table(st, [{"user": n} for n in names], ["user"], empty="No users yet.", data=names)


def user_balances(name: str, as_json: JsonFlag = False) -> None:
    """What a user may spend in each mandate they belong to."""
    st = use(as_json)
    rows = st.backend().balances_for_user(name)
    show_table(
        st,
        rows,
        [
            "mandate",
            ("billing model", "billing_model"),
            "account",
            "balance",
            "available",
            "pending",
            "currency",
        ],
        empty=f"{name} belongs to no mandate.",
    )


def sysadmin_add(user: str, as_json: JsonFlag = False) -> None:
    """Make a registered user a system admin (may administer every mandate)."""
    st = use(as_json)
    st.backend().access.add_sysadmin(user)
    _sysadmin(st, user, True)


def sysadmin_remove(user: str, as_json: JsonFlag = False) -> None:
    """Take the system-admin role away (their admin keys stop working).

    The only system admin cannot be removed (last_sysadmin): add the successor first.
    """
    st = use(as_json)
    st.backend().access.remove_sysadmin(user)
    _sysadmin(st, user, False)


def sysadmin_check(user: str, as_json: JsonFlag = False) -> None:
    """Whether a user is a system admin."""
    st = use(as_json)
    _sysadmin(st, user, st.backend().access.is_sysadmin(user))


def _sysadmin(st: State, user: str, yes: bool) -> None:
    if st.json:
        print_json(st, {"user": user, "sysadmin": yes})
    else:
        say(st, f"{user} is {'a' if yes else 'not a'} system admin")


def member_add(
    mandate: str,
    user: str,
    role: Annotated[str, typer.Option(help="Their first role.")] = "member",
    as_json: JsonFlag = False,
) -> None:
    """Make a user a member of a mandate (opens their wallet in prepay_user); an
    existing member is given the role if they lack it."""
    st = use(as_json)
    roles = st.backend().add_member(mandate, user, role=role)
    if st.json:
        print_json(st, {"mandate": mandate, "user": user, "role": role, "roles": roles})
    else:
        say(st, f"{user} is a member of {mandate} with roles: {', '.join(roles) or 'none'}")


def member_list(mandate: str, as_json: JsonFlag = False) -> None:
    """The members of a mandate and their roles."""
    st = use(as_json)
    show_table(
        st,
        st.backend().members(mandate),
        ["user", "roles", ("joined", "joined_at")],
        empty="No members yet.",
    )


def role_grant(mandate: str, user: str, role: str, as_json: JsonFlag = False) -> None:
    """Give a member a role (admin, member, viewer, or a custom role)."""
    st = use(as_json)
    _roles(st, mandate, user, st.backend().access.grant_role(mandate, user, role))


def role_revoke(mandate: str, user: str, role: str, as_json: JsonFlag = False) -> None:
    """Take a role away from a member."""
    st = use(as_json)
    _roles(st, mandate, user, st.backend().access.revoke_role(mandate, user, role))


def role_list(
    mandate: str,
    user: Annotated[str | None, typer.Option(help="This member's roles.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """A member's roles, or the mandate's custom roles."""
    st = use(as_json)
    access = st.backend().access
    if user is not None:
        _roles(st, mandate, user, access.roles_of(mandate, user))
        return
    show_table(
        st,
        access.custom_roles(mandate),
        ["role", "description", ("created", "created_at")],
        title=f"custom roles of {mandate} (built in: sysadmin, admin, member, viewer)",
        empty="No custom roles (built in: sysadmin, admin, member, viewer).",
    )


def _roles(st: State, mandate: str, user: str, roles: list[str]) -> None:
    if st.json:
        print_json(st, {"mandate": mandate, "user": user, "roles": roles})
    else:
        say(st, f"{user} in {mandate}: {', '.join(roles) or 'no roles'}")


def role_define(
    mandate: str,
    role: str,
    description: Annotated[str | None, typer.Option()] = None,
    as_json: JsonFlag = False,
) -> None:
    """Define a custom role in a mandate (give it rules with ``rule add``)."""
    st = use(as_json)
    show_record(st, st.backend().access.define_role(mandate, role, description))


RULE_COLUMNS: list[Any] = [
    ("id", "rule_id"),
    "role",
    "context",
    "item",
    ("permissions", "permissions", lambda r: sorted(p.value for p in r.permissions)),
    ("created", "created_at"),
]


def rule_add(
    mandate: str,
    role: str,
    context: Annotated[str, typer.Argument(help="resource, data or ui.")],
    item: Annotated[
        str, typer.Argument(help="e.g. resource.aicore.openai, or resource.aicore.* (wildcards).")
    ],
    permissions: Annotated[list[str], typer.Argument(help="e.g. view (for a provider: may use).")],
    as_json: JsonFlag = False,
) -> None:
    """Grant a role permissions on an item (a provider: resource resource.aicore.<name> view)."""
    st = use(as_json)
    added = st.backend().access.add_rule(mandate, role, context, item, permissions)
    show_table(st, [added], RULE_COLUMNS, data=added)


def rule_list(mandate: str, as_json: JsonFlag = False) -> None:
    """The rules a mandate added (on top of the built-in defaults)."""
    st = use(as_json)
    show_table(
        st,
        st.backend().access.rules(mandate),
        RULE_COLUMNS,
        empty="No rules beyond the built-in defaults.",
    )


def rule_remove(mandate: str, rule_id: str, as_json: JsonFlag = False) -> None:
    """Remove a rule."""
    st = use(as_json)
    st.backend().access.remove_rule(mandate, rule_id)
    print_json(st, {"removed": rule_id}) if st.json else say(st, f"rule {rule_id} removed")


# ------------------------------------------------------------------ providers


PROVIDER_COLUMNS: list[Any] = [
    "provider",
    ("name", "display_name"),
    "enabled",
    ("updated", "updated_at"),
]


def provider_add(
    name: str,
    display_name: Annotated[str | None, typer.Option()] = None,
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Registered but not usable yet.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Register a provider (a connector the platform has configured)."""
    st = use(as_json)
    info = st.backend().access.register_provider(
        name, display_name=display_name, enabled=not disabled
    )
    show_table(st, [info], PROVIDER_COLUMNS, data=info)


def provider_enable(name: str, as_json: JsonFlag = False) -> None:
    """Let calls use a provider again."""
    st = use(as_json)
    info = st.backend().access.set_provider_enabled(name, True)
    show_table(st, [info], PROVIDER_COLUMNS, data=info)


def provider_disable(name: str, as_json: JsonFlag = False) -> None:
    """Stop new holds on a provider at once (recorded usage still posts)."""
    st = use(as_json)
    info = st.backend().access.set_provider_enabled(name, False)
    show_table(st, [info], PROVIDER_COLUMNS, data=info)


def provider_list(as_json: JsonFlag = False) -> None:
    """The provider registry."""
    st = use(as_json)
    show_table(
        st, st.backend().access.providers(), PROVIDER_COLUMNS, empty="No providers registered."
    )


def provider_allowed(
    mandate: str,
    user: str,
    provider: Annotated[
        str | None, typer.Argument(help="Ask about this provider only (exit 3 if not allowed).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """The providers a member may use, by their roles and the registry; or
    whether they may use one (exit 3 if not)."""
    st = use(as_json)
    backend = st.backend()
    if provider is not None:
        allowed = backend.is_provider_allowed(mandate, user, provider)
        if st.json:
            print_json(
                st, {"mandate": mandate, "user": user, "provider": provider, "allowed": allowed}
            )
        else:
            say(st, f"{user} in {mandate} {'may' if allowed else 'may not'} use {provider}")
        if not allowed:
            raise typer.Exit(EXIT_REFUSED)
        return
    names = backend.allowed_providers(mandate, user)
    if st.json:
        print_json(st, names)
    else:
        say(st, f"{user} in {mandate} may use: {', '.join(names) or 'no provider'}")


# ------------------------------------------------------------------ keys


KEY_COLUMNS: list[Any] = [
    ("id", "key_id"),
    "mandate",
    "user",
    "name",
    ("scopes", "scopes", lambda k: sorted(s.value for s in k.scopes)),
    ("created", "created_at"),
    ("expires", "expires_at"),
    ("revoked", "revoked_at"),
    ("last used", "last_used_at"),
]


def key_create(
    user: Annotated[str, typer.Option(help="Who holds the key.")],
    mandate: MandateOpt = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope", help="billing:use, billing:read or billing:admin (repeat for several)."
        ),
    ] = None,
    expires: Annotated[datetime | None, typer.Option(parser=parse_time, metavar="TIME")] = None,
    name: Annotated[str | None, typer.Option(help="A label for lists.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an API key. Its secret is shown this once: store it now."""
    st = use(as_json)
    created = st.backend().keys.create_key(
        user=user,
        mandate=mandate,
        scopes=tuple(scope or ("billing:use",)),
        expires_at=expires,
        name=name,
    )
    if st.json:
        print_json(st, {"secret": created.secret, "info": created.info})
        return
    show_table(st, [created.info], KEY_COLUMNS)
    st.out.print("secret (shown once, store it now):", style="bold yellow")
    st.out.print(created.secret, markup=False, highlight=False, soft_wrap=True)


def key_list(mandate: MandateOpt = None, as_json: JsonFlag = False) -> None:
    """A mandate's keys, or the platform's admin keys (never their secrets)."""
    st = use(as_json)
    show_table(st, st.backend().keys.list_keys(mandate), KEY_COLUMNS, empty="No keys.")


def key_show(key_id: str, mandate: MandateOpt = None, as_json: JsonFlag = False) -> None:
    """One key: who holds it, its scopes, expiry, revocation and last use."""
    st = use(as_json)
    found = st.backend().keys.get_key(key_id, mandate=mandate)
    show_table(st, [found], KEY_COLUMNS, data=found)


def key_revoke(key_id: str, mandate: MandateOpt = None, as_json: JsonFlag = False) -> None:
    """Revoke a key: it stops working at once."""
    st = use(as_json)
    revoked = st.backend().keys.revoke_key(key_id, mandate=mandate)
    show_table(st, [revoked], KEY_COLUMNS, data=revoked)


# ------------------------------------------------------------------ limits


LIMIT_COLUMNS: list[Any] = ["scope", "subject", "period", "amount", "currency"]


def limit_set(
    mandate: str,
    amount: Annotated[str, typer.Argument(help="The most per period, or 'none' to remove it.")],
    user: Annotated[str | None, typer.Option()] = None,
    feature_instance: Annotated[str | None, typer.Option()] = None,
    period: Annotated[str, typer.Option(help="day, week or month.")] = "month",
    as_json: JsonFlag = False,
) -> None:
    """Cap what one user or one feature instance may spend per period."""
    st = use(as_json)
    value = None if amount.strip().lower() == "none" else parse_money(amount)
    result = st.backend().set_spending_limit(
        mandate, value, user=user, feature_instance=feature_instance, period=period
    )
    if result is None:
        print_json(st, None) if st.json else say(st, "limit removed")
    else:
        show_table(st, [result], LIMIT_COLUMNS, data=result)


def limit_list(mandate: str, as_json: JsonFlag = False) -> None:
    """A mandate's spending limits."""
    st = use(as_json)
    show_table(
        st, st.backend().spending_limits(mandate), LIMIT_COLUMNS, empty="No spending limits."
    )


# ------------------------------------------------------------------ markups


MARKUP_COLUMNS: list[Any] = [
    ("percent", "percent"),
    "mandate",
    "provider",
    "model",
    ("updated", "updated_at"),
]


def markup_set(
    percent: Decimal_,
    mandate: MandateOpt = None,
    provider: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    as_json: JsonFlag = False,
) -> None:
    """Set a markup in percent: platform-wide, or per mandate, provider or model
    (the most specific wins)."""
    st = use(as_json)
    made = st.backend().pricing.set_markup(percent, mandate=mandate, provider=provider, model=model)
    show_table(st, [made], MARKUP_COLUMNS, data=made)


def markup_clear(
    mandate: MandateOpt = None,
    provider: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    as_json: JsonFlag = False,
) -> None:
    """Remove a markup, so the next less specific one applies."""
    st = use(as_json)
    cleared = st.backend().pricing.clear_markup(mandate=mandate, provider=provider, model=model)
    print_json(st, {"cleared": cleared}) if st.json else say(
        st, "markup removed" if cleared else "there was no such markup"
    )


def markup_list(mandate: MandateOpt = None, as_json: JsonFlag = False) -> None:
    """The markups set (platform-wide, or a mandate's)."""
    st = use(as_json)
    show_table(
        st,
        st.backend().pricing.markups(mandate),
        MARKUP_COLUMNS,
        empty="No markups set: 50 % applies.",
    )


def markup_show(
    mandate: MandateOpt = None,
    provider: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    as_json: JsonFlag = False,
) -> None:
    """The markup that applies to a call."""
    st = use(as_json)
    percent = st.backend().pricing.markup_for(mandate, provider, model)
    print_json(st, {"percent": percent}) if st.json else say(st, f"{percent} %")


# ------------------------------------------------------------------ prices


PRICE_COLUMNS: list[Any] = [
    ("id", "price_id"),
    "provider",
    "model",
    "mandate",
    "currency",
    ("input /MTok", "input_mtok"),
    ("output /MTok", "output_mtok"),
    ("cache read", "cache_read_mtok"),
    ("cache write", "cache_write_mtok"),
    ("per request", "per_request"),
    ("valid from", "valid_from"),
]


def price_show(
    provider: str,
    model: str,
    mandate: MandateOpt = None,
    at: Since = None,
    as_json: JsonFlag = False,
) -> None:
    """The price in force for a model: a custom price, else the catalog's."""
    st = use(as_json)
    found = st.backend().pricing.model_price(provider, model, mandate=mandate, at=at)
    show_record(st, found, title=f"{provider} {model}")


def price_set(
    provider: str,
    model: str,
    input_mtok: Annotated[
        Decimal,
        typer.Option(
            "--input", parser=parse_money, metavar="PRICE", help="Per million input tokens."
        ),
    ],
    output_mtok: Annotated[
        Decimal,
        typer.Option(
            "--output", parser=parse_money, metavar="PRICE", help="Per million output tokens."
        ),
    ],
    cache_read: OptDecimal = None,
    cache_write: OptDecimal = None,
    per_request: OptDecimal = None,
    currency: Annotated[str, typer.Option()] = "USD",
    mandate: MandateOpt = None,
    valid_from: When = None,
    output_limit: Annotated[int | None, typer.Option(parser=whole(min=1))] = None,
    as_json: JsonFlag = False,
) -> None:
    """Set a custom price (platform-wide, or for one mandate) from a time on."""
    st = use(as_json)
    made = st.backend().pricing.set_custom_price(
        provider,
        model,
        input_mtok=input_mtok,
        output_mtok=output_mtok,
        cache_read_mtok=cache_read,
        cache_write_mtok=cache_write,
        per_request=per_request,
        currency=currency,
        valid_from=valid_from,
        mandate=mandate,
        output_limit=output_limit,
    )
    show_table(st, [made], PRICE_COLUMNS, data=made)


def price_list(mandate: MandateOpt = None, as_json: JsonFlag = False) -> None:
    """Custom prices (platform-wide, or a mandate's)."""
    st = use(as_json)
    show_table(
        st,
        st.backend().pricing.custom_prices(mandate),
        PRICE_COLUMNS,
        empty="No custom prices: the catalog applies.",
    )


# ------------------------------------------------------------------ exchange rates


FX_COLUMNS: list[Any] = ["base", "quote", ("rate", "rate"), ("valid from", "valid_from"), "source"]


def fx_set(
    base: str,
    quote: str,
    rate: Decimal_,
    valid_from: When = None,
    source: Annotated[str | None, typer.Option(help="Where the rate came from.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Set an exchange rate: one BASE is worth RATE QUOTE from a time on."""
    st = use(as_json)
    made = st.backend().pricing.set_exchange_rate(
        base, quote, rate, valid_from=valid_from, source=source
    )
    show_table(st, [made], FX_COLUMNS, data=made)


def fx_list(
    base: Annotated[str | None, typer.Option()] = None,
    quote: Annotated[str | None, typer.Option()] = None,
    as_json: JsonFlag = False,
) -> None:
    """Exchange rates, with their validity starts."""
    st = use(as_json)
    show_table(
        st, st.backend().pricing.exchange_rates(base, quote), FX_COLUMNS, empty="No exchange rates."
    )


def fx_show(base: str, quote: str, at: Since = None, as_json: JsonFlag = False) -> None:
    """The rate in force at a time (default: now)."""
    st = use(as_json)
    moment = at or datetime.now().astimezone()
    rate = st.backend().pricing.exchange_rate(base, quote, moment)
    print_json(st, {"base": base, "quote": quote, "rate": rate, "at": moment}) if st.json else say(
        st, f"1 {base} = {rate} {quote}"
    )


def fx_import(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="CSV: base,quote,rate,valid_from[,source]",
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Import exchange rates from a CSV file: all of them, or none."""
    st = use(as_json)
    total = sum(1 for _ in path.open(encoding="utf-8"))
    with (
        path.open(encoding="utf-8", newline="") as source,
        progress(st, f"importing {path.name}", total=total) as advance,
    ):

        def lines() -> Iterator[str]:
            for line in source:
                advance(1)
                yield line

        count = st.backend().pricing.import_exchange_rates(lines())
    print_json(st, {"imported": count}) if st.json else say(st, f"imported {count} exchange rates")
