"""Reading what happened: usage reports, exports (CSV or JSON) and the audit log."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TextIO, cast

import typer

from aibill.cli.core import (
    JsonFlag,
    Since,
    State,
    Until,
    example,
    parse_list,
    progress,
    say,
    show_table,
    to_json,
    use,
    whole,
)
from aibill.domain import errors as e
from aibill.domain.model import HistoryFilters

GROUPS = "day, week, month, provider, model, feature_code, feature_instance, user, workflow_id"
By = Annotated[
    str, typer.Option("--by", help=f"Group by one or more of: {GROUPS} (comma separated).")
]
FilterOpt = Annotated[str | None, typer.Option()]


def register(app: typer.Typer) -> None:
    app.command(
        epilog=example(
            "aibill report acme --by provider",
            "aibill report acme --by day,provider --since 2026-11-01",
            "aibill report acme --by user --json",
        )
    )(report)
    app.command(
        epilog=example(
            "aibill export acme history -o history.csv",
            "aibill export acme history --format json --since 2026-11-01 -o november.json",
            "aibill export acme usage --by day,model -o usage.csv",
        )
    )(export)
    app.command(epilog=example("aibill audit acme", "aibill audit  # the platform's own changes"))(
        audit
    )


def report(
    mandate: str,
    by: By = "day",
    since: Since = None,
    until: Until = None,
    user: FilterOpt = None,
    provider: FilterOpt = None,
    model: FilterOpt = None,
    feature_code: FilterOpt = None,
    feature_instance: FilterOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Usage grouped by period, provider, model, feature or user: calls, tokens,
    provider cost and what the mandate was billed."""
    st = use(as_json)
    group_by = parse_list(by)
    with progress(st, "adding up usage"):
        rows = st.backend().usage_report(
            mandate,
            group_by=group_by,
            since=since,
            until=until,
            user=user,
            provider=provider,
            model=model,
            feature_code=feature_code,
            feature_instance=feature_instance,
        )
    columns: list[Any] = [
        (name, name, lambda r, name=name: _key(r.keys.get(name), name)) for name in group_by
    ]
    columns += [
        "calls",
        ("input tokens", "input_tokens"),
        ("output tokens", "output_tokens"),
        ("provider cost", "provider_cost"),
        ("amount", "amount"),
        "currency",
    ]
    show_table(
        st,
        rows,
        columns,
        title=f"{mandate}: usage by {', '.join(group_by)}",
        empty="No usage in this period.",
    )
    if rows and not st.json:
        totals: dict[str, Any] = {}
        for row in rows:
            totals[row.currency] = totals.get(row.currency, 0) + row.amount
        say(
            st,
            "total: "
            + ", ".join(f"{v} {c}" for c, v in totals.items())
            + f" over {sum(r.calls for r in rows):,} calls",
        )


def _key(value: Any, name: str) -> Any:
    if name in ("day", "week", "month") and value is not None:
        return value.strftime("%Y-%m" if name == "month" else "%Y-%m-%d")
    return "(none)" if value is None else value


def export(
    mandate: str,
    what: Annotated[str, typer.Argument(help="history (every entry) or usage (a report).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or json.")] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
    by: By = "day",
    since: Since = None,
    until: Until = None,
    user: FilterOpt = None,
    provider: FilterOpt = None,
    model: FilterOpt = None,
    spreadsheet_safe: Annotated[
        bool,
        typer.Option(
            help="CSV: prefix text cells a spreadsheet would run as a formula (starting with"
            " = + - @, tab or CR) with '. --no-spreadsheet-safe writes the text as stored,"
            " for programs."
        ),
    ] = True,
    as_json: JsonFlag = False,
) -> None:
    """Export entries or a usage report as CSV or JSON, streamed page by page
    (constant memory, any size)."""
    st = use(as_json)
    if what not in ("history", "usage"):
        raise e.InvalidRequest(f"export what: history or usage, not {what!r}.", field="what")
    if fmt not in ("csv", "json"):
        raise e.InvalidRequest(f"--format must be csv or json, not {fmt!r}.", field="format")
    backend = st.backend()
    filters: dict[str, Any] = {
        "since": since,
        "until": until,
        "user": user,
        "provider": provider,
        "model": model,
    }
    filters = {k: v for k, v in filters.items() if v is not None}
    # Read the first page before opening the file: a refusal writes nothing.
    if what == "history":
        backend.history(mandate, limit=1, **_history(filters))
    with _sink(output) as out, progress(st, f"exporting {what}") as advance:
        if what == "history" and fmt == "csv":
            rows = _write_csv(
                backend.iter_history_csv(
                    mandate, spreadsheet_safe=spreadsheet_safe, **_history(filters)
                ),
                out,
                advance,
            )
        elif what == "history":
            rows = _history_json(st, mandate, filters, out, advance)
        elif fmt == "csv":
            rows = _write_csv(
                backend.iter_usage_report_csv(
                    mandate, group_by=parse_list(by), spreadsheet_safe=spreadsheet_safe, **filters
                ),
                out,
                advance,
            )
        else:
            report_rows = backend.usage_report(mandate, group_by=parse_list(by), **filters)
            json.dump(to_json(report_rows), out, indent=1)
            out.write("\n")
            rows = len(report_rows)
            advance(rows)
    where = str(output) if output else "stdout"
    if output is not None or not sys.stdout.isatty():
        st.err.print(f"exported {max(rows, 0):,} rows to {where}", highlight=False, markup=False)


def _write_csv(lines: Iterator[str], out: TextIO, advance: Callable[[int], None]) -> int:
    """Write a CSV's lines as they come; returns how many rows followed the header."""
    count = 0
    for line in lines:
        out.write(line)
        count += 1
        advance(1)
    return count - 1


def _history(filters: dict[str, Any]) -> HistoryFilters:
    return cast(HistoryFilters, filters)


def _history_json(
    st: State, mandate: str, filters: dict[str, Any], out: TextIO, advance: Any
) -> int:
    """A JSON array of entries, written a page at a time."""
    backend = st.backend()
    cursor: str | None = None
    rows = 0
    out.write("[")
    while True:
        page = backend.history(mandate, limit=1000, cursor=cursor, **_history(filters))
        for entry in page.entries:
            out.write(("\n" if rows == 0 else ",\n") + json.dumps(to_json(entry)))
            rows += 1
        advance(len(page.entries))
        cursor = page.cursor
        if cursor is None:
            break
    out.write("\n]\n")
    return rows


@contextmanager
def _sink(output: Path | None) -> Iterator[TextIO]:
    if output is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as out:
            yield out
        partial.replace(output)  # all of it, or nothing under the file's name
    finally:
        partial.unlink(missing_ok=True)


def audit(
    mandate: Annotated[
        str | None, typer.Argument(help="A mandate (default: the platform's log).")
    ] = None,
    limit: Annotated[int, typer.Option(parser=whole(min=1, max=1000))] = 50,
    cursor: Annotated[str | None, typer.Option()] = None,
    as_json: JsonFlag = False,
) -> None:
    """Who changed what, newest first: every administrative change is recorded."""
    st = use(as_json)
    page = st.backend().audit_log(mandate, limit=limit, cursor=cursor)
    show_table(
        st,
        page.records,
        [("at", "at"), "actor", "action", "target", ("before", "before"), ("after", "after")],
        title=f"audit log of {mandate or 'the platform'}",
        empty="No changes recorded.",
        data=page,
    )
    if page.cursor and not st.json:
        say(st, f"more: --cursor {page.cursor}")
