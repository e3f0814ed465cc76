"""``aibill usage import FILE``: usage records from a CSV or JSON Lines file,
posted in batches of up to 1,000 (``record_usage_batch``).

Every record names its mandate and its own idempotency key, so a run that was
cut off is resumed by running it again: the records already posted replay,
and only the rest are posted. The whole file is read and checked first;
a bad line stops the import before anything is posted.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from aibill.cli.core import EXIT_REFUSED, JsonFlag, print_json, progress, say, use
from aibill.domain import errors as e
from aibill.domain.batch import MAX_BATCH_RECORDS, RecordOutcome, UsageRecord
from aibill.domain.money import decimal_from_text, int_from_text
from aibill.domain.usage import Usage

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
TEXT_FIELDS = (
    "user",
    "provider",
    "model",
    "provider_currency",
    "feature_code",
    "feature_instance",
    "workflow_id",
    "description",
)
MONEY_FIELDS = ("amount", "provider_cost")
FIELDS = frozenset(
    {"mandate", "idempotency_key", "already_happened", *TOKEN_FIELDS, *TEXT_FIELDS, *MONEY_FIELDS}
)
SHOWN_REFUSALS = 20


@dataclass
class Summary:
    """What an import did: records posted, replayed (posted by an earlier
    run) and refused, with the refusals' codes and first lines."""

    posted: int = 0
    replayed: int = 0
    refused: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    refusals: list[dict[str, Any]] = field(default_factory=list)

    def count(self, line: int, outcome: RecordOutcome) -> None:
        if outcome.error is not None:
            self.refused += 1
            self.codes[outcome.error.code] += 1
            if len(self.refusals) < SHOWN_REFUSALS:
                refusal = {"line": line, "code": outcome.error.code}
                self.refusals.append({**refusal, "message": outcome.error.message})
        elif outcome.entry is not None and outcome.entry.replayed:
            self.replayed += 1
        else:
            self.posted += 1


def import_usage(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV or JSONL.")
    ],
    batch_size: Annotated[
        int, typer.Option(min=1, max=MAX_BATCH_RECORDS, help="Records per request.")
    ] = 500,
    as_json: JsonFlag = False,
) -> None:
    """Post usage records from a CSV file (a header row names the columns) or a
    JSON Lines file (one object per line), in batches. Columns: mandate,
    idempotency_key, and amount, or provider, model and the token counts, or
    provider_cost; optionally user, feature_code, feature_instance,
    workflow_id, already_happened, description. Run it again to resume."""
    st = use(as_json)
    try:
        records = list(_read(file))
    except e.InvalidRequest as exc:
        raise typer.BadParameter(exc.message, param_hint="FILE") from None
    if not records:
        raise typer.BadParameter("The file holds no records.", param_hint="FILE")
    summary = Summary()
    backend = st.backend()
    with progress(st, f"importing {file.name}", total=len(records)) as advance:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            outcomes = backend.record_usage_batch([record for _, record in chunk])
            for (line, _), outcome in zip(chunk, outcomes, strict=True):
                summary.count(line, outcome)
            advance(len(chunk))
    _report(st, file, summary)
    if summary.refused:
        raise typer.Exit(EXIT_REFUSED)


def _report(st: Any, file: Path, summary: Summary) -> None:
    if st.json:
        print_json(
            st,
            {
                "file": str(file),
                "posted": summary.posted,
                "replayed": summary.replayed,
                "refused": summary.refused,
                "refused_by_code": dict(sorted(summary.codes.items())),
                "refusals": summary.refusals,
            },
        )
        return
    say(
        st,
        f"{file.name}: {summary.posted} posted, {summary.replayed} replayed"
        f" (posted before), {summary.refused} refused.",
    )
    for refusal in summary.refusals:
        say(st, f"  line {refusal['line']}: {refusal['code']}: {refusal['message']}")
    if summary.refused > len(summary.refusals):
        say(st, f"  ... and {summary.refused - len(summary.refusals)} more.")


def _read(file: Path) -> Iterator[tuple[int, UsageRecord]]:
    """Each record of the file with its line number, checked."""
    with file.open(encoding="utf-8", newline="") as handle:
        first = handle.read(1)
        handle.seek(0)
        if file.suffix.lower() in (".jsonl", ".ndjson") or first == "{":
            rows: Iterator[tuple[int, Mapping[str, Any]]] = _json_lines(handle)
        else:
            rows = ((reader.line_num, row) for reader in [csv.DictReader(handle)] for row in reader)
        for line, row in rows:
            yield line, _record(line, row)


def _json_lines(handle: Any) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for line, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text, parse_float=str)  # amounts exact, never a float
        except ValueError:
            raise e.InvalidRequest(f"line {line}: not a JSON object.") from None
        if not isinstance(row, dict):
            raise e.InvalidRequest(f"line {line}: not a JSON object.")
        yield line, row


def _record(line: int, row: Mapping[str, Any]) -> UsageRecord:
    """One row as a record; ``InvalidRequest`` naming the line and the column."""
    values = {k: v for k, v in row.items() if v not in (None, "")}
    unknown = sorted(str(k) for k in values if k not in FIELDS)
    if unknown:
        raise e.InvalidRequest(f"line {line}: unknown column(s) {', '.join(unknown)}.")
    for name in ("mandate", "idempotency_key"):
        if not isinstance(values.get(name), str):
            raise e.InvalidRequest(f"line {line}: {name} is required (it makes a rerun resume).")
    try:
        tokens = {n: int_from_text(str(values[n]), field=n) for n in TOKEN_FIELDS if n in values}
        money = {n: decimal_from_text(str(values[n]), field=n) for n in MONEY_FIELDS if n in values}
    except e.InvalidRequest as exc:
        raise e.InvalidRequest(f"line {line}: {exc.message}") from None
    texts = {n: str(values[n]) for n in TEXT_FIELDS if n in values}
    happened = str(values.get("already_happened", "false")).strip().lower()
    if happened not in ("true", "false", "1", "0", "yes", "no"):
        raise e.InvalidRequest(f"line {line}: already_happened is true or false.")
    fields: dict[str, Any] = {**money, **texts}
    return UsageRecord(
        mandate=values["mandate"],
        idempotency_key=values["idempotency_key"],
        usage=Usage(**tokens) if tokens else None,
        already_happened=happened in ("true", "1", "yes"),
        **fields,
    )
