"""Notifier (semantics.md rules 1 and 19): inserts wake waiters on their queues; only a hint."""

from __future__ import annotations

import asyncio
import time

from relay.storage.base import Storage

from .helpers import insert, insert_one, new_job, yield_to_loop

PROMPT = 2.0  # seconds: a woken waiter returns well within this (its own timeout is much longer)


async def test_insert_wakes_a_waiter_on_its_queue(storage: Storage) -> None:
    waiter = asyncio.create_task(storage.wait_for_jobs(["mail"], timeout=30.0))
    await yield_to_loop()  # the waiter is now waiting
    assert not waiter.done()
    started = time.monotonic()
    producer = asyncio.create_task(insert_one(storage, queue="mail"))
    assert await asyncio.wait_for(waiter, timeout=PROMPT) is True
    assert time.monotonic() - started < PROMPT
    await producer


async def test_batch_insert_wakes_waiters_of_each_of_its_queues(storage: Storage) -> None:
    mail = asyncio.create_task(storage.wait_for_jobs(["mail"], timeout=30.0))
    sms = asyncio.create_task(storage.wait_for_jobs(["other", "sms"], timeout=30.0))
    await yield_to_loop()
    await insert(storage, new_job(queue="mail"), new_job(queue="sms"))
    assert await asyncio.wait_for(asyncio.gather(mail, sms), timeout=PROMPT) == [True, True]


async def test_waiter_on_another_queue_times_out(storage: Storage) -> None:
    waiter = asyncio.create_task(storage.wait_for_jobs(["unwatched"], timeout=0.05))
    await yield_to_loop()
    await insert_one(storage, queue="mail")
    assert await asyncio.wait_for(waiter, timeout=PROMPT) is False


async def test_wait_times_out_when_nothing_arrives(storage: Storage) -> None:
    assert await storage.wait_for_jobs(["mail"], timeout=0.05) is False


async def test_notify_wakes_a_waiter(storage: Storage) -> None:
    waiter = asyncio.create_task(storage.wait_for_jobs(["mail", "sms"], timeout=30.0))
    other = asyncio.create_task(storage.wait_for_jobs(["other"], timeout=0.05))
    await yield_to_loop()
    await storage.notify(["sms"])
    assert await asyncio.wait_for(waiter, timeout=PROMPT) is True
    assert await asyncio.wait_for(other, timeout=PROMPT) is False
