"""How a usage report's range is split: whole UTC days for the rollups, and
the partial days at either end for the entries. The parts never overlap,
leave no gap, and cover exactly ``[since, until)``."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from aibill.domain.reports import report_parts

BASE = datetime(2026, 2, 27, tzinfo=UTC)
_offsets = st.one_of(st.none(), st.integers(-5 * 86_400_000_000, 5 * 86_400_000_000))
_zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)


def _at(offset_us: int | None, zone: timezone) -> datetime | None:
    return (
        None if offset_us is None else (BASE + timedelta(microseconds=offset_us)).astimezone(zone)
    )


@given(_offsets, _offsets, _zones)
def test_the_parts_cover_the_range_exactly(a: int | None, b: int | None, zone: timezone) -> None:
    if a is not None and b is not None and b < a:
        a, b = b, a
    since, until = _at(a, zone), _at(b, zone)
    parts = report_parts(since, until)
    pieces = list(parts.edges)
    if parts.days is not None:
        first, end = parts.days
        for bound in (first, end):
            assert bound is None or (bound.tzinfo == UTC and bound.time() == datetime.min.time())
        if first is not None and end is not None:
            assert first < end
        pieces.append(parts.days)
    for start, stop in parts.edges:
        assert start is not None and stop is not None and stop - start < timedelta(days=1)
    # Sorted by start, the pieces run end to end from since to until.
    pieces.sort(key=lambda p: (p[0] is not None, p[0] or BASE))
    assert pieces[0][0] == since
    assert pieces[-1][1] == until
    for (_, stop), (start, _) in itertools.pairwise(pieces):
        assert stop == start


def test_a_range_inside_one_day_reads_only_entries() -> None:
    since = datetime(2026, 3, 1, 3, tzinfo=UTC)
    parts = report_parts(since, since + timedelta(hours=20))
    assert parts.days is None and parts.edges == ((since, since + timedelta(hours=20)),)


def test_whole_days_need_no_entries() -> None:
    since, until = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC)
    assert report_parts(since, until).edges == ()
    assert report_parts(None, None).days == (None, None)
