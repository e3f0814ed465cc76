"""SQLite's writers in one process take turns in arrival order (store.writers)."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import create_engine

from aibill.domain.errors import StoreUnavailable
from aibill.store.writers import WriterQueue, queue_for


def test_writers_take_their_turns_in_the_order_they_came() -> None:
    queue = WriterQueue()
    order: list[int] = []
    first_inside = threading.Event()
    release = threading.Event()

    def first() -> None:
        with queue.turn():
            first_inside.set()
            release.wait(10)
            order.append(0)

    def writer(i: int) -> None:
        with queue.turn():
            order.append(i)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert first_inside.wait(10)
    for i in range(1, 9):
        thread = threading.Thread(target=writer, args=(i,))
        thread.start()
        threads.append(thread)
        while len(queue._waiting) < i:  # queued in this order
            time.sleep(0.001)
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == list(range(9))


def test_a_writer_gives_up_after_its_wait_and_leaves_the_queue() -> None:
    queue = WriterQueue()
    release = threading.Event()
    inside = threading.Event()

    def hold() -> None:
        with queue.turn():
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(10)
    with pytest.raises(StoreUnavailable), queue.turn(wait_s=0.05):
        pass
    release.set()
    holder.join(10)
    with queue.turn(wait_s=1):  # the turn passed on; nobody left waiting
        assert not queue._waiting


def test_one_queue_per_sqlite_file_none_for_postgresql(tmp_path: object) -> None:
    path = f"{tmp_path}/ledger.db"
    one, two = create_engine(f"sqlite:///{path}"), create_engine(f"sqlite:///{path}")
    assert queue_for(one) is queue_for(two) is not None
    other = create_engine(f"sqlite:///{tmp_path}/other.db")
    assert queue_for(other) is not queue_for(one)
    assert queue_for(create_engine("postgresql+psycopg://u@localhost/db")) is None
