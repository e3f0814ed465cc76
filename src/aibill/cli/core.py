"""What every ``aibill`` command shares: where it connects, how it prints, and
what its exit code says.

A command runs on a local database through the library (``--db``, default
``./aibill.db``) or on a running service through :class:`aibill.Client`
(``--url`` and ``--key``, or ``AIBILL_URL`` and ``AIBILL_KEY``). Both objects
have the same methods, so each command is written once.

Exit codes (stable; scripts may rely on them):

====  ===================================================================
0     done
1     failure: the database or service could not be reached, the ledger
      drifted (``verify``), or an unexpected error
2     misuse: a malformed command, an invalid value, something that does
      not exist, or a conflict (an idempotency key reused differently)
3     refused by a billing rule: insufficient balance, provider not
      allowed, spending limit exceeded (and ``check`` answering "no")
4     denied: the key is invalid, or its holder may not do this
5     ``serve`` only: the server could not start (the port is in use)
====  ===================================================================
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from aibill.client import Client
from aibill.domain import errors as e
from aibill.domain.money import decimal_from_text, int_from_text
from aibill.domain.text import printable
from aibill.domain.times import RANGE_TEXT, check_time
from aibill.service.billing import Billing
from aibill.service.root import open_billing

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_MISUSE = 2
EXIT_REFUSED = 3
EXIT_DENIED = 4

Backend = Billing | Client
"""What a command talks to: the library on a local database, or the service."""


def exit_code_of(err: e.AibillError) -> int:
    """The exit code that tells an operator (or a script) what kind of error this is."""
    if isinstance(err, e.Refused):
        return EXIT_REFUSED
    if isinstance(err, e.PermissionDenied | e.InvalidApiKey):
        return EXIT_DENIED
    if isinstance(err, e.InvalidRequest | e.NotFound | e.Conflict):
        return EXIT_MISUSE
    return EXIT_FAILURE


# ------------------------------------------------------------------ state


@dataclass
class State:
    """The root options, and the backend opened on first use."""

    db: str | None = None
    url: str | None = None
    key: str | None = None
    json: bool = False
    out: Console = field(default_factory=lambda: Console(soft_wrap=True))
    err: Console = field(default_factory=lambda: Console(stderr=True, soft_wrap=True))
    _backend: Backend | None = None
    _local: Billing | None = None

    @property
    def remote(self) -> bool:
        return self.url is not None

    def backend(self) -> Backend:
        """The library on ``--db`` (acting for ``--key``'s holder if one is given),
        or the client of ``--url``."""
        if self._backend is None:
            if self.url is not None:
                if not self.key:
                    raise e.InvalidRequest(
                        "--url needs an API key: pass --key or set AIBILL_KEY.", field="key"
                    )
                self._backend = Client(self.url, self.key)
            else:
                local = self.local()
                self._backend = local.authenticate(self.key) if self.key else local
        return self._backend

    def local(self, *, create: bool = False) -> Billing:
        """The local database itself (commands that only make sense there).

        A SQLite file that does not exist is created only when ``create`` says
        so (``db upgrade``, ``demo``); any other command refuses it in one line,
        so that a mistyped path never becomes a new, empty ledger."""
        if self.url is not None:
            raise e.InvalidRequest(
                "This command works on a local database only; drop --url (and AIBILL_URL).",
                field="url",
            )
        if self._local is None:
            from aibill.settings import SettingsError, load_settings

            try:
                settings = load_settings(database_url=self.db)
            except SettingsError as err:
                raise e.InvalidRequest(str(err)) from None
            _require_sqlite_file(settings.database_url, create=create)
            self._local = open_billing(
                settings.database_url, sqlite_synchronous=settings.sqlite_synchronous
            )
        return self._local

    def close(self) -> None:
        if isinstance(self._backend, Client):
            self._backend.close()
        if self._local is not None:
            self._local.close()


_current: ContextVar[State | None] = ContextVar("aibill_cli_state", default=None)


def begin(st: State) -> None:
    """Make ``st`` the state of the command being run."""
    _current.set(st)


def state() -> State:
    """The state the root command set up for this invocation."""
    st = _current.get()
    if st is None:  # pragma: no cover - the root callback always runs first
        raise RuntimeError("aibill's root command did not run")
    return st


def use(as_json: bool) -> State:
    """The root state, with this command's ``--json`` applied."""
    st = state()
    st.json = st.json or as_json
    return st


class Group(TyperGroup):
    """The root command: turns aibill's errors into one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:  # Typer's own (vendored) click Context
        try:
            return super().invoke(ctx)
        except e.AibillError as err:
            fail(_current.get() or State(), err)
        except OSError as err:  # a file named on the command line
            st = _current.get() or State()
            st.err.print(f"[red]error[/red]: {shown(str(err))}", markup=True, highlight=False)
            raise typer.Exit(EXIT_FAILURE) from None


def fail(st: State, err: e.AibillError) -> NoReturn:
    code = exit_code_of(err)
    if st.json:
        st.err.print_json(json.dumps({"error": err.to_dict(), "exit_code": code}))
    else:
        st.err.print(
            f"[red]error[/red] [bold]\\[{err.code}][/bold]: {shown(err.message)}",
            markup=True,
            highlight=False,
        )
    raise typer.Exit(code)


# ------------------------------------------------------------------ values


def parse_money(value: str) -> Decimal:
    """An exact decimal amount from the command line (never through a float)."""
    try:
        # ASCII digits only (Decimal() would read other scripts' digits too).
        return decimal_from_text(value.strip().replace("_", ""))
    except e.InvalidRequest:
        raise typer.BadParameter(
            f"{value!r} is not a decimal amount: ASCII digits with an optional point (e.g. 12.50)."
        ) from None


def parse_time(value: str) -> datetime:
    """``2026-11-01`` (midnight UTC), ``2026-11-01T08:30`` (UTC) or a full ISO
    timestamp with its offset; always returned timezone-aware."""
    text = value.strip()
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date or time (e.g. 2026-11-01 or 2026-11-01T08:30:00Z)."
        ) from None
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    try:
        check_time(moment, "time")
    except e.InvalidRequest:
        raise typer.BadParameter(
            f"{value!r} is out of range: aibill takes times {RANGE_TEXT}."
        ) from None
    return moment


def whole(min: int | None = None, max: int | None = None) -> Callable[[str | int], int]:
    """An integer option's parser, ``typer.Option(parser=whole(min=0))``: ASCII
    digits only (``int()`` would also read other scripts' digits: ``"١٢"`` is
    12), within ``min`` and ``max``."""

    def integer(value: str | int) -> int:
        if isinstance(value, int):  # a default
            number = value
        else:
            try:
                number = int_from_text(value.strip(), field="value")
            except e.InvalidRequest:
                raise typer.BadParameter(
                    f"{value!r} is not a whole number in ASCII digits."
                ) from None
        if (min is not None and number < min) or (max is not None and number > max):
            bounds = f"from {min}" if max is None else f"from {min} to {max}"
            raise typer.BadParameter(f"{number} is not a whole number {bounds}.")
        return number

    return integer


def parse_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def new_key(st: State, given: str | None) -> str:
    """The idempotency key of a write: the operator's, or a fresh one that is
    shown (on stderr) so the same command can be repeated safely with it."""
    if given:
        return given
    key = f"cli-{uuid.uuid4().hex}"
    st.err.print(
        f"idempotency key: {key}  (repeat with --idempotency-key {key} to retry safely)",
        highlight=False,
        markup=False,
    )
    return key


Money = Annotated[Decimal, typer.Argument(parser=parse_money, metavar="AMOUNT")]
JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print JSON for machines instead of tables.")
]
IdemKey = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        "-k",
        help="Repeat a write safely: the same key and arguments apply once. "
        "Default: a fresh key, printed on stderr.",
    ),
]
Since = Annotated[
    datetime | None,
    typer.Option(parser=parse_time, metavar="TIME", help="From this time on (UTC unless given)."),
]
Until = Annotated[
    datetime | None,
    typer.Option(parser=parse_time, metavar="TIME", help="Before this time (UTC unless given)."),
]


def _require_sqlite_file(database_url: str, *, create: bool) -> None:
    """Refuse, in words, a SQLite ledger file that is missing (unless ``create``)
    or whose folder is missing."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    path = Path(url.database)
    if path.exists():
        return
    if not path.parent.is_dir():
        raise e.InvalidRequest(
            f"No ledger at {path}: the folder {path.parent} does not exist.", field="db"
        )
    if not create:
        raise e.InvalidRequest(
            f"No ledger at {path}. Check the path, or create a new ledger there with"
            f" `{_prog()} --db {path} db upgrade` (or fill one with `... demo`).",
            field="db",
        )


def _prog() -> str:
    return os.environ.get(COMMAND_ENV, "").strip() or "aibill"


COMMAND_ENV = "AIBILL_COMMAND"
"""How the user started aibill (``./scripts/run`` sets it), so that the commands a
hint suggests are typed as the user types them."""


def command(st: State, args: str) -> str:
    """An aibill command line to suggest, as the user can run it: through the
    command they used (``aibill``, or ``./scripts/run``), on the same ``--db``."""
    where = f" --db {st.db}" if st.db and not st.remote else ""
    return f"{_prog()}{where} {args}"


def example(*lines: str) -> str:
    """A help epilog of example invocations."""
    return "Example:\n\n" + "\n\n".join(f"  $ {line}" for line in lines)


# ------------------------------------------------------------------ output


def to_json(value: Any) -> Any:
    """A JSON-ready copy: money as decimal strings, times as ISO 8601 UTC,
    enums as their value, dataclasses as objects with their field names."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    return value


def _title(title: str | None) -> Text | None:
    """A table's title, shown as it is (it may name a stored model or provider)."""
    return None if title is None else Text(printable(title))


def shown(text: str) -> str:
    """``text`` for a Rich markup string: shown as it is (``[bold]`` in a
    description stays literal), with control characters made visible."""
    return escape(printable(text))


def human(value: Any) -> str:
    """A value as a person reads it: exact money, UTC times, blank for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(human(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={human(v)}" for k, v in value.items())
    return str(value)


Column = str | tuple[Any, ...]
"""A field name, (header, field name), or (header, field name, getter)."""


def _column(spec: Column) -> tuple[str, Callable[[Any], Any], bool]:
    if isinstance(spec, str):
        spec = (spec.replace("_", " "), spec)
    header: str = spec[0]
    name: str = spec[1]
    getter: Callable[[Any], Any] = spec[2] if len(spec) > 2 else (lambda row: _get(row, name))
    numeric = any(w in header.lower() for w in ("amount", "balance", "available", "pending"))
    return header, getter, numeric


def _get(row: Any, name: str) -> Any:
    return row.get(name) if isinstance(row, Mapping) else getattr(row, name, None)


def show_table(
    st: State,
    rows: Sequence[Any],
    columns: Sequence[Column],
    *,
    title: str | None = None,
    empty: str = "Nothing to show.",
    data: Any = None,
) -> None:
    """``rows`` as a Rich table (or, with ``--json``, ``data`` or the rows as JSON)."""
    if st.json:
        print_json(st, rows if data is None else data)
        return
    if not rows:
        st.out.print(empty, style="dim", highlight=False)
        return
    table = Table(title=_title(title), title_justify="left", header_style="bold")
    getters = []
    for spec in columns:
        header, getter, numeric = _column(spec)
        # Never cut a value: money and ids wrap rather than end in an ellipsis.
        table.add_column(
            header, justify="right" if numeric else "left", overflow="fold", no_wrap=numeric
        )
        getters.append(getter)
    for row in rows:
        table.add_row(*(Text(printable(human(g(row)))) for g in getters))
    st.out.print(table)


def show_record(
    st: State, record: Any, *, title: str | None = None, skip: Iterable[str] = ()
) -> None:
    """One object as a two-column table of its fields (or JSON)."""
    if st.json:
        print_json(st, record)
        return
    items = to_pairs(record)
    table = Table(title=_title(title), title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    hidden = set(skip)
    for name, value in items:
        if name in hidden or value in (None, {}, ()):
            continue
        table.add_row(name.replace("_", " "), Text(printable(human(value))))
    st.out.print(table)


def to_pairs(record: Any) -> list[tuple[str, Any]]:
    if is_dataclass(record) and not isinstance(record, type):
        return [(f.name, getattr(record, f.name)) for f in fields(record)]
    if isinstance(record, Mapping):
        return list(record.items())
    return [("value", record)]


def print_json(st: State, data: Any) -> None:
    st.out.print_json(json.dumps(to_json(data)), highlight=False)


def say(st: State, message: str) -> None:
    """A sentence for people; silent with ``--json`` (which prints the data)."""
    if not st.json:
        st.out.print(message, highlight=False, markup=False)


@contextmanager
def progress(st: State, what: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (a spinner when the total is unknown); yields
    ``advance(n)``. Hidden when stderr is not a terminal."""
    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn() if total else TextColumn(""),
        MofNCompleteColumn() if total else TextColumn("{task.completed:,}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=st.err, transient=True) as bar:
        task = bar.add_task(what, total=total)

        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance


def env_default(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None
