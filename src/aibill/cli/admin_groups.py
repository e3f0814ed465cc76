"""The administrative command groups of ``aibill``: each group's commands,
under their names, with their examples (the commands are in
:mod:`aibill.cli.admin`)."""

from __future__ import annotations

import typer

from aibill.cli import admin
from aibill.cli.core import example


def register(app: typer.Typer) -> None:
    _mandate_commands(app)
    _user_commands(app)
    _sysadmin_commands(app)
    _member_commands(app)
    _role_commands(app)
    _rule_commands(app)
    _provider_commands(app)
    _key_commands(app)
    _limit_commands(app)
    _markup_commands(app)
    _price_commands(app)
    _fx_commands(app)


def _group(app: typer.Typer, name: str, help_text: str) -> typer.Typer:
    group = typer.Typer(help=help_text, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


def _mandate_commands(app: typer.Typer) -> None:
    mandate = _group(app, "mandate", "Mandates (tenants): create, list, show, settings.")
    mandate.command(
        "create", epilog=example("aibill mandate create acme --model prepay_user --currency EUR")
    )(admin.mandate_create)
    mandate.command("list", epilog=example("aibill mandate list"))(admin.mandate_list)
    mandate.command("show", epilog=example("aibill mandate show acme"))(admin.mandate_show)
    mandate.command(
        "settings",
        epilog=example(
            "aibill mandate settings acme",
            "aibill mandate settings acme --billing-model prepay_user",
            "aibill mandate settings acme --overdraft 50",
        ),
    )(admin.mandate_settings)


def _user_commands(app: typer.Typer) -> None:
    user = _group(app, "user", "User identities.")
    user.command("add", epilog=example("aibill user add alice"))(admin.user_add)
    user.command("list", epilog=example("aibill user list"))(admin.user_list)
    user.command("balances", epilog=example("aibill user balances alice"))(admin.user_balances)


def _sysadmin_commands(app: typer.Typer) -> None:
    sysadmin = _group(app, "sysadmin", "System admins: platform-wide administrators.")
    sysadmin.command("add", epilog=example("aibill sysadmin add platform.ops"))(admin.sysadmin_add)
    sysadmin.command("remove", epilog=example("aibill sysadmin remove platform.ops"))(
        admin.sysadmin_remove
    )
    sysadmin.command("check", epilog=example("aibill sysadmin check platform.ops"))(
        admin.sysadmin_check
    )


def _member_commands(app: typer.Typer) -> None:
    member = _group(app, "member", "Who belongs to a mandate.")
    member.command("add", epilog=example("aibill member add acme alice --role admin"))(
        admin.member_add
    )
    member.command("list", epilog=example("aibill member list acme"))(admin.member_list)


def _role_commands(app: typer.Typer) -> None:
    role = _group(app, "role", "Roles of members, and a mandate's custom roles.")
    role.command("grant", epilog=example("aibill role grant acme alice admin"))(admin.role_grant)
    role.command("revoke", epilog=example("aibill role revoke acme alice admin"))(admin.role_revoke)
    role.command(
        "list", epilog=example("aibill role list acme", "aibill role list acme --user alice")
    )(admin.role_list)
    role.command(
        "define",
        epilog=example("aibill role define acme auditor --description 'Reads the audit log'"),
    )(admin.role_define)


def _rule_commands(app: typer.Typer) -> None:
    rule = _group(app, "rule", "Permission rules (what a role may use).")
    rule.command(
        "add", epilog=example("aibill rule add acme viewer resource resource.aicore.mistral view")
    )(admin.rule_add)
    rule.command("list", epilog=example("aibill rule list acme"))(admin.rule_list)
    rule.command("remove", epilog=example("aibill rule remove acme rule_0123456789abcdef"))(
        admin.rule_remove
    )


def _provider_commands(app: typer.Typer) -> None:
    provider = _group(app, "provider", "The platform's AI provider registry.")
    provider.command("add", epilog=example("aibill provider add openai --display-name OpenAI"))(
        admin.provider_add
    )
    provider.command("enable", epilog=example("aibill provider enable mistral"))(
        admin.provider_enable
    )
    provider.command("disable", epilog=example("aibill provider disable mistral"))(
        admin.provider_disable
    )
    provider.command("list", epilog=example("aibill provider list"))(admin.provider_list)
    provider.command(
        "allowed",
        epilog=example(
            "aibill provider allowed acme alice", "aibill provider allowed acme alice openai"
        ),
    )(admin.provider_allowed)


def _key_commands(app: typer.Typer) -> None:
    key = _group(app, "key", "API keys: create (the secret is shown once), list, revoke.")
    key.command(
        "create",
        epilog=example(
            "aibill key create --mandate acme --user alice --scope billing:use",
            "aibill key create --user platform.ops --scope billing:admin  # a system admin key",
        ),
    )(admin.key_create)
    key.command("list", epilog=example("aibill key list --mandate acme"))(admin.key_list)
    key.command("revoke", epilog=example("aibill key revoke 0123456789ab --mandate acme"))(
        admin.key_revoke
    )
    key.command("show", epilog=example("aibill key show 0123456789ab --mandate acme"))(
        admin.key_show
    )


def _limit_commands(app: typer.Typer) -> None:
    limit = _group(app, "limit", "Spending limits per user or feature instance.")
    limit.command(
        "set",
        epilog=example(
            "aibill limit set acme 25 --user alice --period month",
            "aibill limit set acme none --user alice  # remove",
        ),
    )(admin.limit_set)
    limit.command("list", epilog=example("aibill limit list acme"))(admin.limit_list)


def _markup_commands(app: typer.Typer) -> None:
    markup = _group(app, "markup", "The margin on top of provider prices (50 % by default).")
    markup.command(
        "set",
        epilog=example(
            "aibill markup set 30 --mandate acme",
            "aibill markup set 20 --provider openai --model gpt-4o",
        ),
    )(admin.markup_set)
    markup.command("clear", epilog=example("aibill markup clear --mandate acme"))(
        admin.markup_clear
    )
    markup.command("list", epilog=example("aibill markup list --mandate acme"))(admin.markup_list)
    markup.command(
        "show", epilog=example("aibill markup show --mandate acme --provider openai --model gpt-4o")
    )(admin.markup_show)


def _price_commands(app: typer.Typer) -> None:
    price = _group(app, "price", "Provider prices: the catalog's, and custom ones.")
    price.command(
        "show",
        epilog=example(
            "aibill price show openai gpt-4o", "aibill price show openai gpt-4o --mandate acme"
        ),
    )(admin.price_show)
    price.command(
        "set",
        epilog=example(
            "aibill price set selfhosted llama-3-70b --input 0.20 --output 0.60",
            "aibill price set openai gpt-4o --input 2 --output 8 --mandate acme",
        ),
    )(admin.price_set)
    price.command("list", epilog=example("aibill price list", "aibill price list --mandate acme"))(
        admin.price_list
    )


def _fx_commands(app: typer.Typer) -> None:
    fx = _group(app, "fx", "Exchange rates (USD to a mandate's currency).")
    fx.command(
        "set",
        epilog=example(
            "aibill fx set USD CHF 0.80", "aibill fx set USD EUR 0.92 --valid-from 2026-12-01"
        ),
    )(admin.fx_set)
    fx.command("list", epilog=example("aibill fx list --base USD"))(admin.fx_list)
    fx.command("show", epilog=example("aibill fx show USD CHF"))(admin.fx_show)
    fx.command("import", epilog=example("aibill fx import rates.csv"))(admin.fx_import)
