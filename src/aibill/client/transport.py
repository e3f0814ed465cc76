"""The client's requests: each sent with the key, retried when it failed on the
way (a connection error, a timeout, or a 502/503/504 answer) with backoff and
jitter, every retry of a write under the same idempotency key; an answer
decoded, or the error it describes raised."""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Final, Self, TypeVar

import httpx

from aibill.client.errors import ServiceUnavailable, error_from_problem
from aibill.client.wire import decode_json, malformed, parse, query_params
from aibill.domain import errors as e
from aibill.domain.version import __version__

log = logging.getLogger("aibill.client")

RETRY_STATUSES: Final = frozenset({502, 503, 504})
"""Answers that say "not now" (a proxy or the database was unavailable): retried."""

RETRY_ERRORS: Final = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_MAX_BACKOFF_S: Final = 5.0

T = TypeVar("T")


class Transport:
    """The aibill service at ``base_url``, reached over HTTP for the holder of
    ``api_key``: the requests of :class:`~aibill.client.Client` and its parts."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        http: httpx.Client | None = None,
        backoff_s: float = 0.1,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise e.InvalidRequest(
                f"base_url must be an http:// or https:// URL, not {base_url!r}.", field="base_url"
            )
        if not isinstance(api_key, str) or not api_key.strip():
            raise e.InvalidRequest("api_key must be a non-empty string.", field="api_key")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise e.InvalidRequest("retries must be an int of zero or more.", field="retries")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key.strip()
        self._timeout = timeout
        self._retries = retries
        self._backoff_s = backoff_s
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client()

    def close(self) -> None:
        """Close the connections (only those of an HTTP client the client opened)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, cls: type[T], path: str, *, params: Mapping[str, Any] | None = None) -> T:
        return parse(cls, self._call("GET", path, params=params))

    def _list(self, cls: type[T], path: str, *, params: Mapping[str, Any] | None = None) -> list[T]:
        answer = self._call("GET", path, params=params)
        if not isinstance(answer, list):
            raise malformed(f"a list of {cls.__name__}", answer)
        return [parse(cls, item) for item in answer]

    def _field(self, path: str, name: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """One field of a JSON object the service answers a GET with."""
        answer = self._call("GET", path, params=params)
        if not isinstance(answer, dict) or name not in answer:
            raise malformed(f"an object with {name!r}", answer)
        return answer[name]

    def _write(self, cls: type[T], path: str, body: dict[str, Any] | None, key: str | None) -> T:
        """POST a ledger write under an idempotency key; the result says whether
        the service replayed an earlier answer."""
        if key is None:
            key = str(uuid.uuid4())
        elif not isinstance(key, str) or not key.strip() or len(key) > 200:
            raise e.InvalidRequest(
                "idempotency_key must be a non-empty string of at most 200 characters.",
                field="idempotency_key",
            )
        answer = self._call("POST", path, body, key=key)
        return parse(cls, answer)

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        key: str | None = None,
        content: str | None = None,
    ) -> Any:
        """Send one request, retrying what may be retried; the decoded JSON answer
        (None for an answer without a body, such as 204)."""
        response = self._send(method, path, body, params=params, key=key, content=content)
        if response.status_code == 204:
            return None
        try:
            decoded = decode_json(response.content)
        except ValueError:
            raise malformed("a JSON body", response.text[:200]) from None
        if isinstance(decoded, dict) and response.headers.get("Idempotent-Replayed") == "true":
            decoded["replayed"] = True
        return decoded

    def _csv(self, path: str, params: Mapping[str, Any]) -> Iterator[str]:
        """The CSV records of a streamed answer, read as they are iterated."""
        response = self._send("GET", path, params=params, stream=True, accept="text/csv")
        return _records(response, path)

    def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        key: str | None = None,
        content: str | None = None,
        stream: bool = False,
        accept: str = "application/json",
    ) -> httpx.Response:
        """Send one request, retrying what may be retried: the successful response
        (its body not read yet when ``stream``), or the error it describes raised."""
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": f"{accept}, application/problem+json",
            "User-Agent": f"aibill-python/{_version()}",
        }
        if key is not None:
            headers["Idempotency-Key"] = key
        if content is not None:
            headers["Content-Type"] = "text/csv; charset=utf-8"
        query = query_params(params or {})
        url = self.base_url + path
        attempts = self._retries + 1
        for attempt in range(attempts):
            last = attempt + 1 == attempts
            try:
                request = self._http.build_request(
                    method,
                    url,
                    json=None if body is None else dict(body),
                    content=None if content is None else content.encode("utf-8"),
                    params=query or None,
                    headers=headers,
                    timeout=self._timeout,
                )
                response = self._http.send(request, stream=stream)
            except RETRY_ERRORS as exc:
                if last:
                    raise ServiceUnavailable(
                        f"The aibill service at {self.base_url} could not be reached after"
                        f" {attempts} attempt(s): {exc}",
                        method=method,
                        path=path,
                        idempotency_key=key,
                    ) from exc
                log.info("retrying %s %s after %s", method, path, type(exc).__name__)
                self._pause(attempt)
                continue
            if response.is_success:
                return response
            response.read()
            response.close()
            if response.status_code in RETRY_STATUSES and not last:
                log.info("retrying %s %s after HTTP %d", method, path, response.status_code)
                self._pause(attempt)
                continue
            raise self._failure(response, method, path, key)
        raise AssertionError("unreachable")  # pragma: no cover

    def _failure(
        self, response: httpx.Response, method: str, path: str, key: str | None
    ) -> e.AibillError:
        """The error an unsuccessful answer stands for."""
        status = response.status_code
        try:
            decoded = decode_json(response.content) if response.content else None
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and isinstance(decoded.get("code"), str):
            return error_from_problem(status, decoded)
        if status in RETRY_STATUSES:
            return ServiceUnavailable(
                f"The aibill service answered HTTP {status} to {method} {path}"
                f" {self._retries + 1} time(s).",
                status=status,
                method=method,
                path=path,
                idempotency_key=key,
            )
        return e.AibillError(
            f"The aibill service answered HTTP {status} to {method} {path}: {response.text[:200]}",
            code=None,
            status=status,
        )

    def _pause(self, attempt: int) -> None:
        """Wait before retry ``attempt + 1``: exponential, capped, with jitter so
        that many clients failing together do not come back together."""
        delay = min(self._backoff_s * 2**attempt, _MAX_BACKOFF_S)
        if delay > 0:
            self._sleep(delay * random.uniform(0.5, 1.0))

    _sleep = staticmethod(time.sleep)


def _records(response: httpx.Response, path: str) -> Iterator[str]:
    """The CSV records of a streamed answer, each with its line ending, as they
    arrive: a record ends at a line ending outside quotes (a quoted cell may
    hold line breaks of its own)."""
    record = ""
    quotes = 0
    try:
        for chunk in response.iter_text():
            start = 0
            while start < len(chunk):
                end = chunk.find("\n", start) + 1 or len(chunk)
                piece = chunk[start:end]
                record += piece
                quotes += piece.count('"')
                start = end
                if piece.endswith("\n") and quotes % 2 == 0:
                    yield record
                    record, quotes = "", 0
    except RETRY_ERRORS as exc:
        raise ServiceUnavailable(
            f"The CSV from {path} broke off: {exc}", method="GET", path=path
        ) from exc
    finally:
        response.close()
    if record:
        yield record


def _version() -> str:
    return __version__
