"""``aibill serve``: the HTTP API as a service.

It brings the database's schema up to date, creates a bootstrap system admin
and its API key on the first start (printed once), and serves
:func:`aibill.api.create_app` with uvicorn until SIGTERM or SIGINT, on which it
finishes the requests in flight and exits 0.

On SQLite it runs one worker process (SQLite has one writer); on PostgreSQL
several (``--workers``, default 2-4), each with its own connection pool, built
by :func:`app_factory` from the ``AIBILL_*`` environment, which is also how to
run aibill under another process manager::

    uvicorn --factory aibill.serve:app_factory --workers 4

A worker process started by a parent (uvicorn's supervisor) exits when that
parent dies, however it dies (:func:`die_with_parent`), so a killed service
leaves no unsupervised workers holding its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError
from uvicorn.protocols.http.h11_impl import H11Protocol

from aibill.api import create_app
from aibill.domain.errors import AibillError
from aibill.domain.principal import Scope
from aibill.http.throttle import AuthThrottle
from aibill.service.billing import Billing
from aibill.service.lookups import has_sysadmin
from aibill.service.root import open_configured
from aibill.settings import Settings, load_settings

BOOTSTRAP_USER = "admin"
BOOTSTRAP_KEY_NAME = "bootstrap"
STARTUP_FAILURE = 5
"""Exit status when the server cannot start (the port is taken, the address is not
this machine's): not 3, which the command line keeps for a billing refusal."""
GRACEFUL_SHUTDOWN_S = 30
LISTEN_BACKLOG = 2048  # uvicorn's own default
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 1.0
log = logging.getLogger("aibill.serve")


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """The system admin created on the first start, with its key (shown once)."""

    user: str
    secret: str


def ensure_bootstrap_admin(billing: Billing) -> Bootstrap | None:
    """On a ledger without any system admin, create the user ``admin``, make it a
    system admin and create its key with every scope; None when a system admin
    exists already (a restart never creates another key)."""
    if has_sysadmin(billing.engine):
        return None
    billing.add_user(BOOTSTRAP_USER)
    billing.access.add_sysadmin(BOOTSTRAP_USER)
    created = billing.keys.create_key(
        user=BOOTSTRAP_USER,
        mandate=None,
        scopes=[s.value for s in Scope],
        name=BOOTSTRAP_KEY_NAME,
    )
    return Bootstrap(user=BOOTSTRAP_USER, secret=created.secret)


def base_url(host: str, port: int) -> str:
    """The URL a client on this machine uses to reach the service."""
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def bootstrap_banner(boot: Bootstrap, url: str) -> str:
    """What the first start prints: the key, once, and how to use it."""
    rule = "=" * 78
    return "\n".join(
        [
            rule,
            f"First start: created the system admin {boot.user!r} and its API key.",
            "It is shown ONLY NOW (aibill keeps only its hash); store it somewhere safe.",
            "",
            f"    export AIBILL_KEY={boot.secret}",
            "",
            "Try it (creates the mandate acme):",
            f'    curl -s -X POST {url}/v1/mandates -H "Authorization: Bearer $AIBILL_KEY"'
            ' -H \'Content-Type: application/json\' -d \'{"id": "acme", "currency": "CHF"}\'',
            f"Or open the dashboard at {url}/ and sign in with the key.",
            rule,
        ]
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time (UTC), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def log_config(log_format: str) -> dict[str, Any]:
    """uvicorn's logging configuration, in text or JSON, with aibill's loggers at INFO."""
    if log_format == "json":
        formatters: dict[str, Any] = {
            "default": {"()": "aibill.serve.JsonFormatter"},
            "access": {"()": "aibill.serve.JsonFormatter"},
        }
    else:
        formatters = {
            "default": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(levelprefix)s %(message)s",
                "use_colors": None,
            },
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
            },
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": formatters,
        "handlers": {
            "default": {
                "formatter": "default",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
            "access": {
                "formatter": "access",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "aibill": {"handlers": ["default"], "level": "INFO", "propagate": False},
        },
    }


def _first_line(exc: BaseException) -> str:
    """The driver's reason, on one line (for the operator's console only)."""
    cause: BaseException = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__


def die_with_parent() -> None:
    """In a worker process started by a parent (uvicorn's supervisor, through
    multiprocessing), arrange to receive SIGTERM when that parent dies, even by
    SIGKILL: on Linux with ``prctl(PR_SET_PDEATHSIG)``, elsewhere with a thread
    that checks the parent every second. SIGTERM is uvicorn's graceful stop: the
    worker closes its listening socket at once and finishes its requests.
    Nothing happens in a process not started by multiprocessing (uvicorn
    without ``--workers``, which its own process manager watches)."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return
    parent_pid = parent.pid
    if not _pdeathsig(signal.SIGTERM):
        threading.Thread(
            target=_watch_parent, args=(parent_pid,), name="aibill-parent-watch", daemon=True
        ).start()
    if os.getppid() != parent_pid:  # it died before the signal was arranged
        os.kill(os.getpid(), signal.SIGTERM)


def _pdeathsig(sig: int) -> bool:
    """Linux's parent-death signal for this process; False where there is none."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    log.warning("the parent process %d is gone: stopping this worker", parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)


def _create_app(billing: Billing, settings: Settings) -> FastAPI:
    """The app with the settings' session lifetimes and failure budget (one
    budget per worker process: see ``aibill.http.throttle``)."""
    return create_app(
        billing,
        session_policy=settings.session_policy,
        auth_throttle=AuthThrottle(settings.auth_budget),
    )


def app_factory() -> FastAPI:
    """The HTTP API for the ledger the ``AIBILL_*`` environment (or ``AIBILL_CONFIG``)
    names; what each worker process runs (``uvicorn --factory aibill.serve:app_factory``).
    Applies pending migrations (run ``aibill migrate`` first when starting several
    workers on a new database) and closes its connections on shutdown."""
    die_with_parent()
    settings = load_settings()
    billing = open_configured(settings)
    app = _create_app(billing, settings)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        try:
            async with inner(a) as state:
                yield state
        finally:
            billing.close()

    app.router.lifespan_context = lifespan
    return app


@contextmanager
def _exit_quietly_on_signals() -> Iterator[None]:
    """uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal
    to whatever handler was installed before it; with these no-op handlers the
    process goes on to close the ledger and exit 0 instead of dying of the signal."""
    handled = [signal.SIGINT, signal.SIGTERM]
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with Nagle's algorithm off on every connection.

    asyncio turns it off only on sockets created as IPPROTO_TCP, and the
    listening sockets uvicorn binds for several workers are not; with Nagle
    on, each response on a kept-alive connection waits ~40 ms for the
    client's delayed ACK.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def listen_failure(host: str, port: int, exc: OSError) -> str:
    """Why the service cannot listen, and what to change: one line."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {host}:{port}: the port is in use (another aibill serve?)."
            " Choose another with --port or AIBILL_PORT, e.g. ./scripts/run serve --port 8001"
        )
    return (
        f"cannot listen on {host}:{port}: {exc.strerror or exc}."
        " Choose another address with --host / --port, or AIBILL_HOST / AIBILL_PORT"
    )


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is created in the ledger (so
    that a taken port never swallows a bootstrap key) and listening before
    "listening on" is printed (so that a client started by that line is
    queued, never refused); OSError when it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio turns Nagle's algorithm off
    # (TCP_NODELAY) only on sockets that say they are TCP; without it every
    # response on a kept-alive connection waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(
    *,
    database_url: str | None = None,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the service until SIGTERM/SIGINT; returns the process's exit status
    (0 after a graceful shutdown, 2 for bad settings or database, 5 when the
    server cannot start). Arguments that are not None override the settings."""
    out = out or sys.stdout
    err = err or sys.stderr

    def say(text: str, stream: TextIO = out) -> None:
        print(text, file=stream, flush=True)

    try:
        settings = load_settings(database_url=database_url, host=host, port=port, workers=workers)
    except ValueError as exc:  # SettingsError, or a bad AIBILL_CONFIG file
        say(f"aibill serve: {exc}", err)
        return 2
    workers_n = settings.effective_workers
    if settings.is_sqlite and settings.requested_workers > 1:
        say(
            f"aibill serve: SQLite has a single writer, so the service runs 1 worker process,"
            f" not {settings.requested_workers} (use PostgreSQL for several).",
            err,
        )
    if workers_n > 1 and settings.port == 0:
        say("aibill serve: --port 0 (any free port) needs a single worker.", err)
        return 2

    try:
        sock = _bind(settings.host, settings.port)
    except OSError as exc:
        say(f"aibill serve: {listen_failure(settings.host, settings.port, exc)}", err)
        return STARTUP_FAILURE
    url = base_url(settings.host, sock.getsockname()[1])
    try:
        billing = open_configured(settings)
        boot = ensure_bootstrap_admin(billing)
    except AibillError as exc:
        sock.close()
        say(f"aibill serve: error [{exc.code}]: {exc.message}", err)
        return 2
    except (SQLAlchemyError, OSError) as exc:  # the database cannot be reached or used
        sock.close()
        say(
            f"aibill serve: error [store_unavailable]: cannot use the database"
            f" {settings.display_url}: {_first_line(exc)}",
            err,
        )
        return 2
    say(f"aibill: database {settings.display_url} (schema current)")
    if boot is not None:
        say(bootstrap_banner(boot, url))
    say(
        f"aibill listening on {url} ({workers_n} worker process{'es' if workers_n > 1 else ''};"
        " SIGTERM or Ctrl-C stops it)"
    )
    return _run(settings, billing, sock, workers_n)


def _run(settings: Settings, billing: Billing, sock: socket.socket, workers_n: int) -> int:
    """Serve on ``sock`` until SIGTERM/SIGINT: in this process with one worker,
    or under uvicorn's supervisor with several; the exit status."""
    import uvicorn

    config_kwargs: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": log_config(settings.log_format),
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        "server_header": False,
        "http": NoDelayH11Protocol,
    }

    if workers_n == 1:
        app = _create_app(billing, settings)
        config = uvicorn.Config(app, **config_kwargs)
        server = uvicorn.Server(config)
        try:
            with _exit_quietly_on_signals():
                server.run(sockets=[sock])
        finally:
            sock.close()
            billing.close()
        return 0 if server.started else STARTUP_FAILURE

    # Several workers: uvicorn binds the port again in this process and shares it
    # with the workers, each of which builds its own app (and connection pool)
    # from the environment; the schema is current and the bootstrap key exists.
    sock.close()
    billing.close()
    os.environ.update(settings.to_env())
    uvicorn.run("aibill.serve:app_factory", factory=True, workers=workers_n, **config_kwargs)
    return 0
