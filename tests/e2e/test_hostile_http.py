"""Hostile requests against a real ``aibill serve``, over raw sockets.

Request bodies are bounded while they stream, however they are framed
(``Content-Length`` or ``Transfer-Encoding: chunked``), before any
authentication or parsing: an oversized body is answered 413
``request_too_large`` with ``Connection: close``, nothing is written, and the
worker's peak memory does not grow with the body. ``/docs`` loads nothing from
another origin and renders under the dashboard's Content Security Policy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import BACKENDS, PostgresServer, need_pg
from tests.e2e.test_serve import Served, headers

KIB = 1024
MIB = 1024 * KIB
JSON_LIMIT = 64 * KIB
FORM_LIMIT = 16 * KIB
UPLOAD_LIMIT = 64 * KIB
CSV_HEADER = b"base,quote,rate,valid_from\n"


@dataclass
class Server:
    served: Served
    base_url: str
    key: str
    backend: str

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.base_url)
        assert parts.hostname and parts.port
        return parts.hostname, parts.port

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=headers(self.key), timeout=10)

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the serve process itself with one
        worker, its children (uvicorn's workers) with several."""
        pid = self.served.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        workers = [int(c) for c in children if _is_worker(int(c))]
        return workers or [pid]


def _is_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory so far (``VmHWM``), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, flags=re.M)
    assert match, status
    return int(match.group(1))


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One ``aibill serve`` per backend (two workers on PostgreSQL) with the
    mandate ``acme`` (currency CHF) and no rates."""
    workdir = tmp_path_factory.mktemp(f"hostile-{request.param}")
    pg: PostgresServer | None = None
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'ledger.db'}"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), workdir / "ledger.db")
        args = ["--db", url, "--port", "0"]
    else:
        pg = request.getfixturevalue("pg_server")
        assert pg is not None
        need_pg(pg)
        url = pg.create()
        args = ["--db", url, "--port", str(_free_port()), "--workers", "2"]
    served = Served(workdir, args)
    try:
        base_url = served.wait_ready()
        key = served.bootstrap_key()
        assert key
        with httpx.Client(base_url=base_url, headers=headers(key), timeout=10) as api:
            r = api.post("/v1/mandates", json={"id": "acme", "currency": "CHF"})
            assert r.status_code == 201, r.text
        yield Server(served, base_url, key, request.param)
    finally:
        served.kill()
        if pg is not None:
            pg.drop(url)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------- raw HTTP


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent_bytes: int

    def problem(self) -> dict[str, Any]:
        assert self.headers["content-type"].startswith("application/problem+json"), self
        found: dict[str, Any] = json.loads(self.body)
        return found


def raw_request(
    server: Server,
    path: str,
    *,
    body: Iterator[bytes] | bytes = b"",
    chunked: bool = False,
    content_length: int | None = None,
    content_type: str = "application/json",
    extra: dict[str, str] | None = None,
) -> Answer:
    """POST ``body`` to ``path`` on a raw socket, chunked or with a length
    (``content_length`` declares one whatever is sent). The body is sent from
    another thread while this one reads the answer, so a server that answers
    early and closes is seen answering; a send that then fails is fine."""
    head = [f"POST {path} HTTP/1.1", f"Host: {server.address[0]}", f"Content-Type: {content_type}"]
    head += [f"{k}: {v}" for k, v in (extra or {}).items()]
    if chunked:
        head.append("Transfer-Encoding: chunked")
    else:
        if content_length is None:
            assert isinstance(body, bytes)
            content_length = len(body)
        head.append(f"Content-Length: {content_length}")
    sock = socket.create_connection(server.address, timeout=30)
    sent = [0]

    def send_body() -> None:
        parts = [body] if isinstance(body, bytes) else body
        try:
            for part in parts:
                if chunked:
                    sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                else:
                    sock.sendall(part)
                sent[0] += len(part)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed the connection

    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        answer = _read_answer(sock)
        sender.join(timeout=30)
        assert not sender.is_alive(), "the server kept reading an oversized body"
    finally:
        sock.close()
    return Answer(*answer, sent_bytes=sent[0])


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without an answer: {data!r}"
        data += chunk
    raw_head, rest = data.split(b"\r\n\r\n", 1)
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    found = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(found.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, found, rest[:length]


def repeat(piece: bytes, total: int, size: int = 64 * KIB) -> Iterator[bytes]:
    """``total`` bytes of ``piece`` repeated, in parts of ``size``."""
    block = (piece * (size // len(piece) + 1))[:size]
    left = total
    while left > 0:
        yield block[: min(size, left)]
        left -= size


def json_body(total: int) -> Iterator[bytes]:
    """A JSON credit whose description makes the body ``total`` bytes long."""
    start = b'{"amount": "5.00", "description": "'
    yield start
    yield from repeat(b"x", total - len(start) - 2)
    yield b'"}'


def credited(server: Server) -> str:
    with server.api() as api:
        r = api.get("/v1/mandates/acme/balance")
        assert r.status_code == 200, r.text
        balance: str = r.json()["balance"]
        return balance


def rates(server: Server) -> list[Any]:
    with server.api() as api:
        found: list[Any] = api.get("/v1/exchange-rates").json()
        return found


def assert_refused(answer: Answer, limit: int, *, page: bool = False) -> None:
    assert answer.status == 413, answer
    assert answer.headers.get("connection") == "close", answer.headers
    if page:
        assert answer.headers["content-type"].startswith("text/html")
        assert b"request_too_large" in answer.body
    else:
        assert answer.problem()["code"] == "request_too_large"
        assert str(limit) in answer.problem()["detail"]


# ----------------------------------------------------------------- tests


ROUTES = [  # path, limit, content type, whether the answer is the dashboard's page
    ("/v1/mandates/acme/credits", JSON_LIMIT, "application/json", False),
    ("/v1/exchange-rates/import", UPLOAD_LIMIT, "text/csv", False),
    ("/sign-in", FORM_LIMIT, "application/x-www-form-urlencoded", True),
    ("/platform/rates-import", UPLOAD_LIMIT, "multipart/form-data; boundary=b", True),
]


@pytest.mark.parametrize("authenticated", [False, True], ids=["no-key", "key"])
@pytest.mark.parametrize(("path", "limit", "content_type", "page"), ROUTES)
def test_a_declared_length_over_the_limit_is_refused_before_the_body(
    server: Server, path: str, limit: int, content_type: str, page: bool, authenticated: bool
) -> None:
    """Content-Length: 1 GB and no body sent: the answer comes at once."""
    extra = headers(server.key) if authenticated else {}
    started = time.monotonic()
    answer = raw_request(server, path, content_length=10**9, content_type=content_type, extra=extra)
    assert time.monotonic() - started < 5
    assert_refused(answer, limit, page=page)


@pytest.mark.parametrize("authenticated", [False, True], ids=["no-key", "key"])
@pytest.mark.parametrize(("path", "limit", "content_type", "page"), ROUTES)
def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(
    server: Server, path: str, limit: int, content_type: str, page: bool, authenticated: bool
) -> None:
    before = (credited(server), rates(server))
    extra = headers(server.key, idem=f"big-{path}") if authenticated else {}
    if "exchange-rates" in path or "rates-import" in path:
        body: Iterator[bytes] = _csv_rows(4 * MIB)
    else:
        body = json_body(4 * MIB)
    answer = raw_request(
        server, path, body=body, chunked=True, content_type=content_type, extra=extra
    )
    assert_refused(answer, limit, page=page)
    assert (credited(server), rates(server)) == before  # nothing written
    assert "set-cookie" not in answer.headers  # no session either


def test_a_body_just_over_the_limit_with_a_length_is_refused_and_writes_nothing(
    server: Server,
) -> None:
    before = credited(server)
    body = b"".join(json_body(JSON_LIMIT + 1))
    answer = raw_request(
        server, "/v1/mandates/acme/credits", body=body, extra=headers(server.key, "just-over")
    )
    assert_refused(answer, JSON_LIMIT)
    assert credited(server) == before


def test_a_chunked_body_within_the_limit_still_works(server: Server) -> None:
    before = credited(server)
    body = json.dumps({"amount": "2.50", "description": "chunked " + "y" * 400}).encode()
    parts = iter([body[i : i + 10] for i in range(0, len(body), 10)])
    idem = f"chunked-ok-{time.monotonic_ns()}"
    answer = raw_request(
        server,
        "/v1/mandates/acme/credits",
        body=parts,
        chunked=True,
        extra=headers(server.key, idem),
    )
    assert answer.status == 201, answer
    assert json.loads(answer.body)["amount"] == "2.500000"
    from decimal import Decimal

    assert Decimal(credited(server)) == Decimal(before) + Decimal("2.5")
    # A CSV import sent in chunks, within the limit, is imported.
    rows = [b"EUR,USD,1.08,2020-01-0%d\n" % day for day in range(1, 4)]
    answer = raw_request(
        server,
        "/v1/exchange-rates/import",
        body=iter([CSV_HEADER, *rows]),
        chunked=True,
        content_type="text/csv",
        extra=headers(server.key),
    )
    assert answer.status == 200, answer
    assert json.loads(answer.body) == {"imported": 3}


def _csv_rows(total: int) -> Iterator[bytes]:
    yield CSV_HEADER
    yield from repeat(b"EUR,CHF,0.95,2020-01-01\n", total - len(CSV_HEADER))


@pytest.mark.slow
@pytest.mark.parametrize("authenticated", [False, True], ids=["no-key", "key"])
def test_a_200_mb_chunked_body_leaves_the_workers_memory_alone(
    server: Server, authenticated: bool
) -> None:
    """The issue's attack: 200 MB chunked took a worker from 117 MB to 517 MB
    (and, with a key, was posted). Now the worker stops reading after the
    limit and its peak memory barely moves."""
    before_balance = credited(server)
    pids = server.worker_pids()
    before = {pid: peak_rss_kib(pid) for pid in pids}
    extra = headers(server.key, idem=f"huge-{authenticated}") if authenticated else {}
    started = time.monotonic()
    answer = raw_request(
        server, "/v1/mandates/acme/credits", body=json_body(200 * MIB), chunked=True, extra=extra
    )
    elapsed = time.monotonic() - started
    assert_refused(answer, JSON_LIMIT)
    assert answer.sent_bytes < 50 * MIB, "the server read far past the limit"
    assert elapsed < 10
    growth_mib = max(peak_rss_kib(pid) - before[pid] for pid in pids) / 1024
    assert growth_mib < 20, f"a worker's peak memory grew by {growth_mib:.0f} MiB"
    assert credited(server) == before_balance


# -------------------------------------------------------------- /readyz, /docs


def test_redoc_is_not_served(server: Server) -> None:
    """Only /docs, from vendored assets: ReDoc would need inline styles."""
    r = httpx.get(f"{server.base_url}/readyz", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert httpx.get(f"{server.base_url}/redoc", timeout=10).status_code == 404


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.refs += [v for k, v in found.items() if k in ("src", "href") and v]
        self._in_script = tag == "script" and "src" not in found
        self.inline_scripts += self._in_script

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def test_the_api_docs_refer_to_no_other_origin(server: Server) -> None:
    r = httpx.get(f"{server.base_url}/docs", timeout=10)
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    parsed = _Refs()
    parsed.feed(r.text)
    assert parsed.inline_scripts == 0
    assert parsed.refs and all(
        ref.startswith("/") and not ref.startswith("//") for ref in parsed.refs
    )
    assert "cdn" not in r.text.lower() and "http" not in r.text.lower()
    for ref in parsed.refs:  # every asset is served here
        assert httpx.get(f"{server.base_url}{ref}", timeout=10).status_code == 200, ref


@pytest.mark.slow
def test_the_api_docs_render_in_chromium_without_csp_violations(server: Server) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true requires Chromium for the browser tests")
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    here = urlsplit(server.base_url).netloc
    offsite: list[str] = []
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            ctx = browser.new_context()

            def only_here(route: Any) -> None:
                if urlsplit(route.request.url).netloc == here:
                    route.continue_()
                else:
                    offsite.append(route.request.url)
                    route.abort()

            ctx.route("**/*", only_here)
            page = ctx.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda err: problems.append(str(err)))
            page.goto(f"{server.base_url}/docs")
            page.wait_for_selector(".opblock-tag", timeout=20_000)
            assert page.locator(".opblock").count() > 20
            assert "aibill" in page.locator(".title").first.inner_text()
            # Open one operation: it renders its schema too.
            page.locator(".opblock-summary").first.click()
            page.wait_for_selector(".opblock-body", timeout=10_000)
            page.wait_for_timeout(300)
        finally:
            browser.close()
    assert offsite == []
    assert problems == []
