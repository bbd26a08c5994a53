"""Rate control: the limiter learns a cap on requests in flight and a rate per second from 429s, puts each
429 down to one of them, and a short whole-second Retry-After holds only the refused request's retry.
Speed itself is measured in bench/bench.py (figure 12), not here."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Callable

import pytest

from conftest import read_jsonl, run_script, start_script, wait_for, write_prompts
from fake_teacher import FakeTeacher, Reply, TokenBucket, adjusted, answer, completion, status

import generate_distillation_data as gdd


def test_capped_server_all_done_once_and_cap_respected_after_adaptation(workdir):
    server = FakeTeacher(latency=0.02, max_in_flight=4).start()
    try:
        write_prompts(workdir, [f"task {i}" for i in range(150)])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url,
                            "-c", "32", "--backoff", "0.02")
        assert result.code == 0, result.err
        ids = Counter(r["metadata"]["prompt_id"] for r in result.records())
        assert len(ids) == 150 and set(ids.values()) == {1}
        answered = [b for b in server.requests]
        assert server.rejected > 0  # it did overshoot at the start (-c 32 against a cap of 4)...
        last_half = answered[len(answered) // 2:]
        rejected_late = sum(1 for b in last_half if "_rejected" in b)
        assert rejected_late == 0 or rejected_late / len(last_half) < 0.2
        assert server.rejected / len(answered) < 0.5  # ...and then stayed mostly under it
    finally:
        server.stop()


def test_limiter_halves_once_per_wave_and_regrows_to_last_safe_level():
    import asyncio

    import generate_distillation_data as gdd

    async def scenario():
        limiter = gdd.AdaptiveLimiter(16, slow_start=16)
        slots = [await limiter.acquire(i) for i in range(16)]
        assert limiter.in_flight == 16
        for slot in slots[:8]:
            limiter.admit(slot)  # the teacher took 8...
        for slot in slots[8:]:
            limiter.release(slot, gdd.Answered.RATE_LIMITED)  # one wave of 429s: the 9th..16th in flight
        assert limiter.limit == 8 and limiter.ceiling == 8
        for slot in slots[:8]:
            limiter.release(slot, gdd.Answered.OK)
        assert limiter.pace is None  # above every level taken: the number in flight, not the rate
        assert limiter.limit == 8  # already taken, they do not grow it again
        for _ in range(8 * 16):  # probing above it is slow
            limiter.release(await limiter.acquire(0), gdd.Answered.OK)
        assert 8 < limiter.limit < 10

    asyncio.run(scenario())


def test_retry_after_pauses_new_requests():
    import asyncio
    import time

    import generate_distillation_data as gdd

    async def scenario():
        limiter = gdd.AdaptiveLimiter(4)
        limiter.pause_until(time.monotonic() + 0.2)
        started = time.monotonic()
        slot = await limiter.acquire(0)
        limiter.release(slot, gdd.Answered.OK)
        return time.monotonic() - started

    assert asyncio.run(scenario()) >= 0.19


def test_slow_start_doubles_each_round_trip_until_the_first_429():
    import asyncio

    async def scenario():
        limiter = gdd.AdaptiveLimiter(64, slow_start=4)
        levels = []
        for _ in range(4):  # a round trip: every request in flight answers
            slots = [await limiter.acquire(0) for _ in range(int(limiter.limit))]
            levels.append(len(slots))
            for slot in slots:
                limiter.release(slot, gdd.Answered.OK)
        slots = [await limiter.acquire(0) for _ in range(int(limiter.limit))]
        limiter.release(slots.pop(), gdd.Answered.RATE_LIMITED)  # the first 429 ends it
        return levels, limiter.limit

    levels, after = asyncio.run(scenario())
    assert levels == [4, 8, 16, 32] and after == 63  # just below the level refused


def test_rate_limit_reset_header_holds_the_retry(workdir, teacher, run):
    import time as clock

    write_prompts(workdir, ["q"])

    def reset(body):
        return status(429, headers={"X-RateLimit-Reset": str(int((clock.time() + 0.4) * 1000))})(body)

    teacher.script("q", reset, answer("ok"))
    result = run()
    assert result.code == 0
    first, second = teacher.received_at[-2:]
    assert second - first >= 0.35  # not before the window reset, whatever --backoff says (0.01 here)


@pytest.mark.parametrize("meter", ["token bucket", "fixed window"])
def test_metered_teachers_lose_nothing(workdir, meter):
    from fake_teacher import FixedWindow, TokenBucket

    limit = TokenBucket(40, 4) if meter == "token bucket" else FixedWindow(8, 0.5)
    server = FakeTeacher(latency=0.02, meter=limit).start()
    try:
        write_prompts(workdir, [f"q{i}" for i in range(30)])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url,
                            "-c", "16")
    finally:
        server.stop()
    assert result.code == 0, result.err
    assert len(result.records()) == 30 and server.rejected > 0


class RemainingRequests:
    """A gateway's requests-per-window meter that says what is left on every answer, as OpenAI, Groq and
    LiteLLM's proxy do (x-ratelimit-limit-requests, x-ratelimit-remaining-requests, and OpenAI's
    x-ratelimit-reset-requests), and answers 429 without Retry-After once the window is spent."""

    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self.started, self.count = time.monotonic(), 0

    def _roll(self) -> None:
        now = time.monotonic()
        if now - self.started >= self.window:
            self.started += (now - self.started) // self.window * self.window
            self.count = 0

    def headers(self) -> dict:
        self._roll()
        left = self.started + self.window - time.monotonic()
        return {"x-ratelimit-limit-requests": str(self.limit),
                "x-ratelimit-remaining-requests": str(self.limit - self.count),
                "x-ratelimit-reset-requests": f"{max(left, 0.001):.3f}s"}

    def admit(self) -> dict | None:
        self._roll()
        if self.count < self.limit:
            self.count += 1
            return None
        return {}  # a 429 that says nothing about when


def test_remaining_requests_headers_hold_requests_for_the_window_instead_of_429s(workdir):
    meter = RemainingRequests(limit=10, window=1.0)

    def with_budget(body: dict) -> Reply:
        return Reply(body=completion({"content": "ok"}), headers=meter.headers())

    server = FakeTeacher(default_step=with_budget, meter=meter, latency=0.02).start()
    try:
        write_prompts(workdir, [f"q{i}" for i in range(40)])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url,
                            "-c", "16")
        assert result.code == 0, result.err
        assert len(result.records()) == 40
        assert server.rejected <= 4, f"{server.rejected} refused: the headers said what was left"
    finally:
        server.stop()


NONSENSE_BUDGETS = {
    "-1 left": {"x-ratelimit-remaining-requests": "-1", "x-ratelimit-reset-requests": "1h"},
    "a window of 0": {"x-ratelimit-limit-requests": "0", "x-ratelimit-remaining-requests": "0",
                      "x-ratelimit-reset-requests": "1h"},
    "0 left for 10 years": {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "0",
                            "x-ratelimit-reset-requests": "87600h"},
}


@pytest.mark.parametrize("headers", list(NONSENSE_BUDGETS.values()), ids=list(NONSENSE_BUDGETS))
def test_rate_headers_that_contradict_the_answers_never_stall_the_run_and_are_said_once(run, teacher, workdir,
                                                                                       headers):
    """Each would hold the run for the window's end (an hour, or 10 years cut to 600 s; the test's own timeout
    ends first): headers that make no sense, or that say nothing is left while the teacher goes on answering,
    are not believed, said once in the summary, and the limits are learned from 429s instead."""
    write_prompts(workdir, [f"q{i}" for i in range(12)])
    teacher.default_step = lambda body: Reply(body=completion({"content": "ok"}), headers=headers)
    result = run("-c", "4", tools="none", subprocess=True, timeout=60)
    assert result.code == 0, result.err
    assert len(result.records()) == 12
    assert result.err.count("Rate limits: the teacher's x-ratelimit-*-requests headers") == 1


def test_a_spent_budget_with_a_long_window_is_asked_with_one_request_and_a_429_keeps_it():
    async def go():
        clock = Clock()
        limiter = gdd.AdaptiveLimiter(8, slow_start=8, clock=clock)
        first = await limiter.acquire(0)
        limiter.tell_budget(first, 0, 100, 600.0)  # none left for 10 minutes
        limiter.release(first, gdd.Answered.OK)
        probe = await asyncio.wait_for(limiter.acquire(0), 1)  # one goes, to ask
        assert probe.probe and not limiter._has_room()  # and only one
        limiter.release(probe, gdd.Answered.RATE_LIMITED)  # refused: the headers were right
        assert limiter.budget_distrusted is None and limiter.budget_left is not None
        clock.now += 1
        again = await asyncio.wait_for(limiter.acquire(0), 1)
        limiter.tell_budget(again, 0, 100, 600.0)
        limiter.release(again, gdd.Answered.OK)  # answered while none was left: not believed any more
        assert limiter.budget_distrusted and limiter.budget_left is None
        later = await limiter.acquire(0)
        limiter.tell_budget(later, 0, 100, 600.0)  # said again: no longer heard
        assert limiter.budget_left is None
        # a minute's window is waited out, as LiteLLM's
        short = gdd.AdaptiveLimiter(8, slow_start=8, clock=clock)
        slot = await short.acquire(0)
        short.tell_budget(slot, 0, 10, 30.0)
        short.release(slot, gdd.Answered.OK)
        assert not short._has_room()

    asyncio.run(go())


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


def test_a_paced_waiter_is_woken_when_its_moment_passes_between_two_looks_at_the_clock():
    """The race that hung a worker of this suite under load: the limiter looked at the clock (no room yet: the
    pace's next moment was a millisecond away), then again to set its timer, and by then the moment had
    passed, so it set none, and the waiting request waited for ever. Here the clock reads 0.9 s twice (before
    the moment, 1.0 s), then 1.1 s when the timer is set."""
    async def go():
        readings = [0.5]  # each look takes the next reading; the last one stays

        def clock() -> float:
            return readings.pop(0) if len(readings) > 1 else readings[0]

        limiter = gdd.AdaptiveLimiter(64, slow_start=8, clock=clock)
        limiter.pace = limiter.pace_ceiling = 1000.0
        limiter.next_send = 1.0
        readings[:] = [0.9, 0.9, 1.1]
        slot = await asyncio.wait_for(limiter.acquire(0), 2)
        limiter.release(slot, gdd.Answered.OK)
        return True

    assert asyncio.run(go())


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
    (429, {"Retry-After": "Wed, 21 Oct 2015 07:28:01 GMT", "Date": "Wed, 21 Oct 2015 07:28:00 GMT"},
     1.0, False),
    (429, {"Retry-After": "0.5"}, 0.5, True),  # exact: whoever sends it means it
    (429, {"X-RateLimit-Reset": "1767225600000"}, 0.4, True),  # OpenRouter's reset time, in ms
    (503, {"Retry-After": "1"}, 1.0, True),  # an overloaded server, not a meter
    (429, {}, None, True),  # no wait said: nothing to hold anyway
])
def test_which_waits_hold_every_request(status_code, headers, wait, holds):
    import httpx

    assert gdd._wait_holds_everyone(status_code, wait, httpx.Headers(headers)) is holds


def test_an_exact_reset_time_holds_every_request(workdir):
    """With one request in flight, the next prompt is not sent into the window the 429 said is spent."""
    import time

    server = FakeTeacher().start()
    try:
        def reset(body):
            return status(429, "window spent", {
                "X-RateLimit-Reset": str(int((time.time() + 0.5) * 1000))})(body)

        server.script("refused", reset, answer("ok"))
        write_prompts(workdir, ["refused", "next"])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url,
                            "-c", "1")
    finally:
        server.stop()
    assert result.code == 0, result.err
    assert server.received_at[1] - server.received_at[0] >= 0.4  # neither the retry nor "next" went sooner
    assert len(server.requests) == 3


def test_a_teacher_metered_with_whole_second_retry_afters_loses_nothing(workdir):
    server = FakeTeacher(latency=0.02, meter=TokenBucket(40, 4, retry_after=True)).start()
    try:
        write_prompts(workdir, [f"q{i}" for i in range(30)])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url,
                            "-c", "16", "--backoff", "0.01")
    finally:
        server.stop()
    assert result.code == 0, result.err
    assert len(result.records()) == 30
    assert len({r["metadata"]["prompt_id"] for r in result.records()}) == 30 and server.rejected > 0


@pytest.mark.parametrize("header", ["Retry-After", "X-RateLimit-Reset"])
def test_a_rate_limit_that_resets_in_hours_stops_the_run_saying_when(run, teacher, workdir, header):
    headers = {header: "3600" if header == "Retry-After" else str(int((time.time() + 86400) * 1000))}
    write_prompts(workdir, [f"capped {i}" for i in range(5)])
    teacher.default_step = status(429, "free-models-per-day", headers)
    result = run("-c", "1", tools="none")
    assert result.code == 1 and result.err.count("rate limit resets in") == 1
    assert ("1h00m00s" if "Retry-After" in headers else "23h59m") in result.err
    assert len(teacher.requests) == 1 and not result.failed()  # nothing paid: every prompt is pending


def test_an_http_date_retry_after_is_read_against_the_servers_clock():
    import httpx

    headers = httpx.Headers({"Date": "Wed, 01 Jan 2025 00:00:00 GMT",
                             "Retry-After": "Wed, 01 Jan 2025 00:00:02 GMT"})
    assert gdd.retry_after_seconds(headers) == 2.0  # not "long ago" by our clock


def test_slow_start_grows_when_a_request_is_taken_not_when_its_answer_ends():
    """Admission (the first streamed data, or no refusal within the window) grows the limit; the answer's end
    does not grow it again; a 429 after admission still counts as one."""
    import asyncio

    import generate_distillation_data as gdd

    async def go():
        limiter = gdd.AdaptiveLimiter(64, slow_start=4)
        slots = [await limiter.acquire(0) for _ in range(4)]
        for slot in slots:
            limiter.admit(slot)
            limiter.admit(slot)  # once only
        assert limiter.limit == 12  # doubled: two more each, since these four still hold their slots
        late = await limiter.acquire(0)  # the fifth in flight, above every level taken
        limiter.admit(late)
        limiter.release(late, gdd.Answered.RATE_LIMITED)
        assert limiter.limit <= 6.5
        for slot in slots:
            limiter.release(slot, gdd.Answered.OK)
        assert limiter.limit <= 6.5  # taken already: their ends do not grow it

    asyncio.run(go())


def test_a_budget_spent_again_in_every_window_is_asked_with_one_request_after_the_first_wait():
    """"0 left, resets in 60 s" on every answer would make one request a minute: the first window is waited
    out; when the next is spent at once too, one request asks the teacher. Answered: the headers are not
    believed. A teacher whose headers are true refuses that one request, and from then on its windows are
    waited out."""
    async def go(refuses: bool) -> gdd.AdaptiveLimiter:
        clock = Clock()
        limiter = gdd.AdaptiveLimiter(8, slow_start=8, clock=clock)
        first = await limiter.acquire(0)
        limiter.tell_budget(first, 0, 100, 60.0)
        limiter.release(first, gdd.Answered.OK)
        assert not limiter._has_room()  # the first window is waited out, as LiteLLM's minutes are
        clock.now += 60.5
        second = await asyncio.wait_for(limiter.acquire(0), 1)
        assert not second.probe
        limiter.tell_budget(second, 0, 100, 60.0)  # spent again, at once
        limiter.release(second, gdd.Answered.OK)
        probe = await asyncio.wait_for(limiter.acquire(0), 1)  # not another minute: one request asks
        assert probe.probe and not limiter._has_room()
        limiter.release(probe, gdd.Answered.RATE_LIMITED if refuses else gdd.Answered.OK)
        return limiter

    lying = asyncio.run(go(refuses=False))
    assert lying.budget_distrusted and lying.budget_left is None and lying._has_room()
    honest = asyncio.run(go(refuses=True))
    assert honest.budget_distrusted is None and honest.budget_proven and not honest._has_room()


def simulate(limiter: gdd.AdaptiveLimiter, clock: Clock, refused: Callable[[float, int], bool], until: float,
             latency: float = 0.2) -> list[tuple[float, int, int]]:
    """A teacher on the test's clock, in steps of 10 ms, for a limiter with more requests to send than it will
    ever let go: `refused(now, ours)` says whether a request sent now, with `ours` of ours in flight, is
    refused (answered 429 at once); a request taken streams its first data after 50 ms (admitted) and ends
    after `latency`. Returns (time, requests of ours in flight, requests refused so far) at each step."""
    events: list[tuple[float, int, str, gdd.Slot]] = []  # (when, order, what, slot)
    order, ours_taken, refusals, trace = 0, 0, 0, []
    while clock.now < until:
        clock.now = round(clock.now + 0.01, 6)
        due = sorted(e for e in events if e[0] <= clock.now)
        events = [e for e in events if e[0] > clock.now]
        for _, _, what, slot in due:
            if what == "refused":
                limiter.release(slot, gdd.Answered.RATE_LIMITED)
                refusals += 1
            elif what == "first data":
                limiter.admit(slot)
            else:
                ours_taken -= 1
                limiter.release(slot, gdd.Answered.OK)
        while limiter._has_room():
            slot = limiter._start()
            order += 1
            if refused(clock.now, ours_taken):
                events.append((clock.now + 0.001, order, "refused", slot))
            else:
                ours_taken += 1
                events += [(clock.now + 0.05, order, "first data", slot),
                           (clock.now + latency, order, "done", slot)]
        trace.append((clock.now, ours_taken, refusals))
    for when, _, what, slot in sorted(events):  # what is still in flight ends, as the teacher answers it
        clock.now = max(clock.now, when)
        if what == "first data":
            limiter.admit(slot)
        else:
            limiter.release(slot, gdd.Answered.RATE_LIMITED if what == "refused" else gdd.Answered.OK)
    return trace


def simulate_shared_teacher(limiter: gdd.AdaptiveLimiter, clock: Clock, neighbour_leaves: float, until: float,
                            cap: int = 8, held: int | None = None) -> list[tuple[float, int, int]]:
    """A teacher that answers 429 above `cap` requests in flight, shared with a neighbour (another shard on
    the same key) that holds `held` of them (all, by default) until `neighbour_leaves`."""
    held = cap if held is None else held

    def refused(now: float, ours: int) -> bool:
        return ours + (held if now < neighbour_leaves else 0) >= cap

    return simulate(limiter, clock, refused, until)


def test_a_limiter_whose_first_requests_are_refused_takes_the_teachers_free_capacity_within_seconds():
    """A shard whose first requests met its neighbours' load (the teacher's 8 slots all theirs) held one
    request at a time, at one a second, and stayed there long after the teacher was idle: the pace regrew only
    when it held a request back beside another in flight. While the teacher is busy it still sends little;
    once the neighbour leaves, it takes the teacher's whole capacity within seconds."""
    clock = Clock()
    start = clock.now
    limiter = gdd.AdaptiveLimiter(20, slow_start=4, clock=clock)
    trace = simulate_shared_teacher(limiter, clock, neighbour_leaves=start + 5.0, until=start + 10.0)
    busy = [refused for when, _, refused in trace if when < start + 5.0]
    assert busy[-1] <= 4 + 6  # the first burst of 4, then about one a second while the teacher is busy
    full = next(when for when, ours, _ in trace if ours == 8)
    assert full - (start + 5.0) <= 2.0, (f"8 in flight only {full - start - 5.0:.2f} s after the teacher "
                                         "was free")
    assert limiter.pace is None and limiter.limit >= 8  # no pace left over from a refusal that told nothing


def test_a_shard_refused_while_another_holds_the_teacher_is_taken_once_it_is_free_not_after_its_backoff(
        workdir):
    """Two shards on a teacher with one slot (a llama.cpp server with one): while shard A holds it, shard B's
    request is refused, and went into its own exponential backoff (1, 2, 4, 8 s ...), so the teacher sat idle
    8-12 s after A finished. Refused while the teacher takes nothing of B's, the request goes back to B's
    limiter at once, which sends one a second (the docs' promise) and is taken as soon as A lets go. With
    --backoff 600, B's backoff would outlast the test: B ends within it only because nothing waits on a
    backoff of its own."""
    teacher = FakeTeacher(max_in_flight=1).start()
    try:
        (workdir / "a").mkdir()
        (workdir / "b").mkdir()
        write_prompts(workdir / "a", ["shard A's long answer"])
        write_prompts(workdir / "b", ["shard B's question"])
        release = threading.Event()
        teacher.script("shard A's long answer", adjusted(answer("A is done"), sse_hold=release))
        a = start_script(workdir / "a", "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url)
        wait_for(lambda: teacher.held, what="A to hold the teacher's one slot")
        b = start_script(workdir / "b", "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                         "--backoff", "600")
        wait_for(lambda: teacher.rejected >= 2, what="B refused, and asking again")
        release.set()
        _, b_err = a.communicate(timeout=30)[1], b.communicate(timeout=30)[1]
    finally:
        release.set()
        teacher.stop()
    assert a.returncode == 0 and b.returncode == 0, b_err
    assert (read_jsonl(workdir / "b" / "train.jsonl")[0]["messages"][-1]["content"]
            == "Answer to: shard B's question")
    refused = sum(1 for body in teacher.requests if body.get("_rejected"))
    assert (f"{refused} answered 429, {refused} retried" in b_err
            and not (workdir / "b" / "train.failed.jsonl").exists())


def test_a_request_refused_while_the_teacher_serves_only_others_fails_after_its_backoffs_worth(workdir):
    """The bound of that: a teacher that never takes one (a key others spend for good) is asked one request a
    second for as long as the request's backoff would have waited in all (--backoff 0.1, 2 retries: 0.3 s),
    then the prompt fails as before, "retries used up (HTTP 429)", and the run does not go on for ever."""
    teacher = FakeTeacher(default_step=status(429, "busy with others")).start()
    try:
        write_prompts(workdir, ["never taken"])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                            "--backoff", "0.1", "--retries", "2")
    finally:
        teacher.stop()
    assert (result.code == 1
            and read_jsonl(workdir / "train.failed.jsonl")[0]["kind"] == "retries used up (HTTP 429)")
    assert 2 <= len(teacher.requests) <= 4


def test_a_limiter_that_had_learned_the_cap_keeps_it_after_a_blind_refusal():
    """A refusal with nothing taken lately says only that the teacher was busy: the cap learned earlier (7,
    from a 429 at 8) stays, and slow start climbs back to it, not above."""
    clock = Clock()
    limiter = gdd.AdaptiveLimiter(20, slow_start=20, clock=clock)
    trace = simulate_shared_teacher(limiter, clock, neighbour_leaves=clock.now, until=clock.now + 3.0, cap=7)
    assert max(ours for _, ours, _ in trace[-50:]) == 7 and limiter.ceiling == 7
    clock.now += 30  # a long quiet spell: nothing taken lately
    trace = simulate_shared_teacher(limiter, clock, neighbour_leaves=clock.now + 2.0,
                                    until=clock.now + 5.0, cap=7)
    assert limiter.ceiling == 7 and max(ours for _, ours, _ in trace[-50:]) == 7


def test_closing_the_limiter_ends_every_wait_at_once():
    """A stop: requests waiting for a slot, the pace or a Retry-After hear it now, not one by one as their
    turn comes (at one a second, a queue of 40 outlived a cluster's 30 s before SIGKILL)."""
    async def go():
        limiter = gdd.AdaptiveLimiter(64, slow_start=1)
        limiter.pace, limiter.next_send = 1.0, limiter.clock() + 1.0  # one a second, the next in a second
        limiter.pause_until(limiter.clock() + 120)  # and a window spent for two minutes
        waiting = [asyncio.ensure_future(limiter.acquire(i)) for i in range(40)]
        await asyncio.sleep(0)
        limiter.close()
        done, pending = await asyncio.wait(waiting, timeout=5)
        assert not pending and all(isinstance(task.exception(), gdd.LimiterClosed) for task in done)
        with pytest.raises(gdd.LimiterClosed):
            await limiter.acquire(0)  # and nothing starts after

    asyncio.run(go())


def test_a_share_of_the_cap_learned_beside_a_neighbour_grows_back_when_it_leaves():
    """Beside a neighbour holding 6 of the teacher's 8 slots, the limiter learns a cap of 2; once the
    neighbour finished, it crept back one request at a time, every few seconds (9 s to 8 in flight, the
    teacher idle meanwhile). A request taken at the level that was refused says the cap moved: slow start goes
    on."""
    clock = Clock()
    start = clock.now
    limiter = gdd.AdaptiveLimiter(20, slow_start=4, clock=clock)
    trace = simulate_shared_teacher(limiter, clock, neighbour_leaves=start + 10.0, until=start + 16.0, held=6)
    assert max(ours for when, ours, _ in trace if start + 5 < when < start + 10) == 2  # its share, meanwhile
    full = next(when for when, ours, _ in trace if when > start + 10 and ours == 8)
    assert full - (start + 10.0) <= 3.0, f"8 in flight {full - start - 10.0:.2f} s after the neighbour left"
