"""How the dashboard shows things: the Jinja2 environment, money, times, and
the overview's sparkline. Presentation only: every number comes from the
service as it is.

Money is the service's Decimal, exactly: the integer part grouped by thousands
(with a narrow no-break space), and the fraction with the service's six
decimals minus trailing zeros beyond the second (``1 234.50``, ``0.009744``).
Only zeros are dropped, so nothing is ever rounded; the exact value is also
in the ``value`` attribute of the ``<data>`` element that carries it.

Times are rendered in UTC (``<time datetime="...Z" title="... UTC">``); the
page's script rewrites the text in the viewer's timezone and keeps UTC in
the title, so the page is right without JavaScript too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

GROUP_SEPARATOR = "\u202f"  # narrow no-break space: never breaks a number across lines
MIN_DECIMALS = 2


def format_amount(amount: Decimal) -> str:
    """``Decimal('12345.600000')`` -> ``'12 345.60'``: exact, grouped."""
    text = format(amount, "f")
    sign = ""
    if text.startswith("-"):
        sign, text = "-", text[1:]
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0")
    fraction = fraction + "0" * (MIN_DECIMALS - len(fraction))
    groups: list[str] = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    return f"{sign}{GROUP_SEPARATOR.join(groups)}.{fraction}"


def money(amount: Decimal | None, currency: str = "") -> Markup:
    """``<data class="money" value="12.500000">12.50 CHF</data>``."""
    if amount is None:
        return Markup('<span class="muted">—</span>')
    classes = "money negative" if amount < 0 else "money"
    cur = Markup(' <span class="cur">{}</span>').format(currency) if currency else ""
    return Markup('<data class="{}" value="{}">{}{}</data>').format(
        classes, format(amount, "f"), format_amount(amount), cur
    )


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def when(value: datetime | None, kind: str = "datetime") -> Markup:
    """A time for people: UTC in the markup, the viewer's timezone after the
    script ran, UTC on hover either way. ``kind="date"`` shows the day only."""
    if value is None:
        return Markup('<span class="muted">—</span>')
    at = utc(value)
    iso = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    full = at.strftime("%Y-%m-%d %H:%M:%S UTC")
    text = at.strftime("%Y-%m-%d") if kind == "date" else at.strftime("%Y-%m-%d %H:%M UTC")
    return Markup('<time datetime="{}" title="{}" data-kind="{}">{}</time>').format(
        iso, full, kind, text
    )


def day(value: date | datetime) -> str:
    return value.strftime("%Y-%m-%d")


def sparkline(values: Sequence[Decimal], *, width: int = 120, height: int = 32) -> Markup:
    """An inline SVG line of ``values`` (oldest first), scaled to its maximum.
    Decorative: the numbers it draws are given in words next to it."""
    if not values:
        return Markup("")
    top = max(values)
    step = Decimal(width) / max(len(values) - 1, 1)
    pad = 2
    hundredth = Decimal("0.01")

    def y(v: Decimal) -> Decimal:  # a pixel coordinate, in Decimal like the money it draws
        if top <= 0:
            return Decimal(height - pad)
        return (height - pad - v / top * (height - 2 * pad)).quantize(hundredth)

    points = " ".join(f"{(i * step).quantize(hundredth)},{y(v)}" for i, v in enumerate(values))
    area = f"0,{height} {points} {width},{height}"
    return Markup(
        '<svg class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}" aria-hidden="true"'
        ' focusable="false" preserveAspectRatio="none">'
        '<polygon class="spark-area" points="{area}"/>'
        '<polyline class="spark-line" points="{points}"/></svg>'
    ).format(w=width, h=height, area=area, points=points)


def plain(value: Decimal) -> str:
    """A Decimal without trailing zeros or exponent: ``50.000000`` -> ``50``."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


MAX_CHANGES = 8
MAX_CHANGE_TEXT = 48


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= MAX_CHANGE_TEXT else text[: MAX_CHANGE_TEXT - 1] + "…"


def changes(before: Any, after: Any) -> list[tuple[str, str | None, str | None]]:
    """An audit record's change as ``(field, before, after)`` for the fields that
    differ (every field that has a value, for a creation), at most eight."""
    old = before if isinstance(before, dict) else ({} if before is None else {"value": before})
    new = after if isinstance(after, dict) else ({} if after is None else {"value": after})
    out = []
    for name in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(name), new.get(name)
        if a == b or (a is None and b is None):
            continue
        out.append((name, None if a is None else _short(a), None if b is None else _short(b)))
    return out[:MAX_CHANGES]


def label(value: Any) -> str:
    """A tag as recorded, or a readable stand-in for none."""
    return "(none)" if value in (None, "") else str(value)


def make_environment() -> Environment:
    env = Environment(
        loader=PackageLoader("aibill.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        money=money,
        when=when,
        amount=format_amount,
        day=day,
        label=label,
        plain=plain,
        changes=changes,
    )
    env.globals.update(sparkline=sparkline, escape=escape)
    return env
