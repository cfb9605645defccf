"""The thread governor's decisions on a simulated machine (its clock is fed, nothing is timed)."""

from __future__ import annotations

from engine.train.runtime import ThreadGovernor

TOKENS = 4096  # one 16x256 step


def simulate(gov: ThreadGovernor, phases: list[tuple[float, dict[int, float]]]) -> list[list[float]]:
    """Run each phase (seconds, tok/s per thread count) and return, per phase, the seconds spent
    at each thread count [at 2, at 1]."""
    now, spent = 0.0, []
    gov.step(TOKENS, now)
    for seconds, rate in phases:
        at = {2: 0.0, 1: 0.0}
        end = now + seconds
        while now < end:
            dt = TOKENS / rate[gov.threads]
            at[gov.threads] += dt
            now += dt
            gov.step(TOKENS, now)
        spent.append([at[2], at[1]])
    return spent


QUIET = {2: 22_000.0, 1: 13_000.0}  # both cores free: two threads are faster
SPINNING = {2: 300.0, 1: 12_000.0}  # a busy loop on one core, OpenMP threads spin-waiting: a crawl
PASSIVE = {2: 5_000.0, 1: 12_000.0}  # the same with sleeping OpenMP threads


def test_quiet_machine_stays_on_all_cores_with_rare_tries():
    gov = ThreadGovernor(2)
    (at2, at1), = simulate(gov, [(600.0, QUIET)])
    assert gov.threads == 2 and at1 / (at1 + at2) < 0.02  # tries of one thread: < 2 % of the time
    assert gov.backoff == gov.max_backoff


def test_busy_core_moves_to_one_thread_and_back_when_it_frees():
    for busy_rates in (SPINNING, PASSIVE):
        gov = ThreadGovernor(2)
        _, busy, again = simulate(gov, [(60.0, QUIET), (300.0, busy_rates), (900.0, QUIET)])
        assert busy[1] / sum(busy) > 0.9, busy_rates  # most of the busy phase on the free core
        tokens = busy[0] * busy_rates[2] + busy[1] * busy_rates[1]
        assert tokens / sum(busy) > 0.4 * QUIET[2]  # holds > 0.4x of the quiet figure
        assert gov.threads == 2 and again[0] / sum(again) > 0.5, again  # found its way back


def test_one_core_machine_has_nothing_to_choose():
    gov = ThreadGovernor(1)
    assert not gov.active and gov.choices == [1]
    assert simulate(gov, [(10.0, {1: 5000.0, 2: 5000.0})])[0][0] == 0.0


def test_a_jittery_neighbour_does_not_make_it_retry_the_crawl():
    """Other processes come and go: the one-thread speed halves and recovers every few seconds.
    Slow-downs must not send it back to two spin-waiting threads (13 s a step) more than the
    budget allows."""
    gov = ThreadGovernor(2)
    phases = [(3.0, {2: 300.0, 1: 12_000.0 if i % 2 else 5_000.0}) for i in range(200)]
    spent = simulate(gov, phases)
    at2 = sum(p[0] for p in spent)
    assert at2 / sum(sum(p) for p in spent) < 0.1
