"""Rate control: the limiter learns a cap on requests in flight and a rate per second from 429s, puts each
429 down to one of them, and a short whole-second Retry-After holds only the refused request's retry.
Speed itself is measured in bench/bench.py (figure 12), not here."""

from __future__ import annotations

import asyncio

import pytest
from conftest import run_script, write_prompts
from fake_teacher import FakeTeacher, TokenBucket, answer, status

import generate_distillation_data as gdd


class Clock:
    """A clock the test moves: the limiter's judgement depends on how long it has watched."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def taken(limiter: gdd.AdaptiveLimiter, count: int) -> list[gdd.Slot]:
    """`count` requests started and taken by the teacher (still in flight)."""
    slots = [await limiter.acquire(0) for _ in range(count)]
    for slot in slots:
        limiter.admit(slot)
    return slots


def test_a_429_at_a_level_the_teacher_just_took_sets_a_pace_and_keeps_the_in_flight_limit():
    async def go():
        clock = Clock()
        limiter = gdd.AdaptiveLimiter(64, slow_start=8, clock=clock)
        slots = await taken(limiter, 8)  # the teacher took 8 at once...
        for slot in slots[2:]:
            limiter.release(slot, gdd.Answered.OK)
        clock.now += 1.0  # watched long enough to measure a rate
        refused = await limiter.acquire(0)  # ...then refused one at level 3: not the number in flight
        assert refused.level == 3
        limit_before = limiter.limit
        limiter.release(refused, gdd.Answered.RATE_LIMITED)
        assert limiter.pace is not None and limiter.limit == limit_before and limiter.wave == 0
        return limiter

    limiter = asyncio.run(go())
    assert 0 < limiter.pace <= limiter.pace_ceiling


def test_a_429_above_every_level_taken_halves_the_in_flight_limit_and_sets_no_pace():
    async def go():
        limiter = gdd.AdaptiveLimiter(64, slow_start=16)
        slots = await taken(limiter, 8)
        refused = [await limiter.acquire(0) for _ in range(8)]  # levels 9..16, never taken
        for slot in refused:
            limiter.release(slot, gdd.Answered.RATE_LIMITED)
        assert limiter.pace is None and limiter.limit == 8 and limiter.ceiling == 8 and limiter.wave == 1
        for slot in slots:
            limiter.release(slot, gdd.Answered.OK)

    asyncio.run(go())


def test_the_pace_spaces_requests_and_only_a_request_sent_after_a_cut_cuts_again():
    async def go():
        limiter = gdd.AdaptiveLimiter(64, slow_start=8)
        limiter._taken.append((limiter.clock() - 1.0, 1))  # watched for a second
        slots = await taken(limiter, 8)
        for slot in slots[1:]:
            limiter.release(slot, gdd.Answered.OK)
        early = [await limiter.acquire(0) for _ in range(2)]  # sent before the cut, at levels 2 and 3
        limiter.release(early[0], gdd.Answered.RATE_LIMITED)
        pace = limiter.pace
        limiter.release(early[1], gdd.Answered.RATE_LIMITED)  # same burst: does not cut again
        assert limiter.pace == pace
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = []
        for _ in range(3):
            slot = await limiter.acquire(0)
            sent.append(loop.time() - started)
            limiter.release(slot, gdd.Answered.OK)
        return pace, sent

    pace, sent = asyncio.run(go())
    # at most one interval's slack: the third request cannot go before two intervals have passed
    assert sent[2] >= 1 / pace - 0.01


def test_the_pace_grows_only_while_it_holds_requests_back():
    async def go():
        limiter = gdd.AdaptiveLimiter(64, slow_start=8)
        limiter.pace = limiter.pace_ceiling = 1000.0  # far above what is sent: it never holds anything back
        for _ in range(50):
            slot = await limiter.acquire(0)
            limiter.admit(slot)
            limiter.release(slot, gdd.Answered.OK)
        return limiter.pace

    assert asyncio.run(go()) == 1000.0


def test_a_whole_second_retry_after_holds_only_the_refused_request(run, teacher, workdir):
    """A token bucket's 50 ms wait reads "Retry-After: 1": the other prompts go on meanwhile."""
    write_prompts(workdir, ["refused", "b", "c", "d", "e"])
    teacher.script("refused", status(429, "slow down", {"Retry-After": "1"}), answer("ok"))
    result = run(tools="none")
    assert result.code == 0, result.err
    firsts = [request["messages"][-1]["content"] for request in teacher.requests]
    assert firsts.index("e") < len(firsts) - 1 and firsts[-1] == "refused"  # e went before the retry
    assert len(result.records()) == 5


@pytest.mark.parametrize("status_code, headers, wait, holds", [
    (429, {"Retry-After": "1"}, 1.0, False),  # a rounded-up token wait
    (429, {"Retry-After": "4"}, 4.0, False),
    (429, {"Retry-After": "5"}, 5.0, True),  # a spent window
    (429, {"Retry-After": "Wed, 21 Oct 2015 07:28:01 GMT", "Date": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1.0, False),
    (429, {"Retry-After": "0.5"}, 0.5, True),  # exact: whoever sends it means it
    (429, {"X-RateLimit-Reset": "1767225600000"}, 0.4, True),  # OpenRouter's reset time, in ms
    (503, {"Retry-After": "1"}, 1.0, True),  # an overloaded server, not a meter
    (429, {}, None, True),  # no wait said: nothing to hold anyway
])
def test_which_waits_hold_every_request(status_code, headers, wait, holds):
    import httpx

    assert gdd.wait_holds_everyone(status_code, wait, httpx.Headers(headers)) is holds


def test_an_exact_reset_time_holds_every_request(workdir):
    """With one request in flight, the next prompt is not sent into the window the 429 said is spent."""
    import time

    server = FakeTeacher().start()
    try:
        reset = lambda body: status(429, "window spent", {  # noqa: E731
            "X-RateLimit-Reset": str(int((time.time() + 0.5) * 1000))})(body)
        server.script("refused", reset, answer("ok"))
        write_prompts(workdir, ["refused", "next"])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url, "-c", "1")
    finally:
        server.stop()
    assert result.code == 0, result.err
    assert server.received_at[1] - server.received_at[0] >= 0.4  # neither the retry nor "next" went sooner
    assert len(server.requests) == 3


def test_a_teacher_metered_with_whole_second_retry_afters_loses_nothing(workdir):
    server = FakeTeacher(latency=0.02, meter=TokenBucket(40, 4, retry_after=True)).start()
    try:
        write_prompts(workdir, [f"q{i}" for i in range(30)])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url, "-c", "16",
                            "--backoff", "0.01")
    finally:
        server.stop()
    assert result.code == 0, result.err
    assert len(result.records()) == 30
    assert len({r["metadata"]["prompt_id"] for r in result.records()}) == 30 and server.rejected > 0
