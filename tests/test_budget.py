"""Budget arithmetic with an injected clock: no test here sleeps or reads the real time."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from placer.budget import PROCESS_STARTED, RESERVE_MAX_S, Budget, reserve_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_wall_clock_budget_counts_down_and_expires() -> None:
    clock = FakeClock()
    b = Budget(10.0, clock=clock)
    assert b.remaining() == 10.0
    clock.now += 4.0
    assert b.remaining() == pytest.approx(6.0)
    assert b.share(0.5) == pytest.approx(3.0)
    assert b.share(0.1, at_least=1.0) == pytest.approx(1.0)
    assert b.share(1.0, at_most=2.0) == pytest.approx(2.0)
    assert not b.expired()
    clock.now += 7.0
    assert b.expired()
    assert b.remaining() == 0.0


def test_deterministic_budget_ignores_wall_clock_until_the_hard_stop() -> None:
    clock = FakeClock()
    b = Budget(10.0, deterministic=True, clock=clock)
    clock.now += 9.0  # a busy machine: wall time passes, deterministic time does not
    assert b.remaining() == 10.0
    b.charge(4.0)
    assert b.remaining() == pytest.approx(6.0)
    assert not b.expired()
    clock.now += 2.0  # past the hard stop
    assert b.expired()
    assert b.record()["wall_clock_stop"] is True


def test_cpsat_limits_follow_the_mode() -> None:
    clock = FakeClock()
    params = SimpleNamespace(max_time_in_seconds=0.0, max_deterministic_time=0.0)
    Budget(10.0, clock=clock).limit_cpsat(params, 3.0)
    assert params.max_time_in_seconds == pytest.approx(3.0)
    det = Budget(10.0, deterministic=True, clock=clock)
    clock.now += 8.0
    det.limit_cpsat(params, 5.0)
    assert params.max_deterministic_time == pytest.approx(5.0)
    assert params.max_time_in_seconds == pytest.approx(2.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_budget_refuses_a_non_positive_limit(bad: float) -> None:
    with pytest.raises(ValueError, match="time limit"):
        Budget(bad)


def test_reserve_and_process_start_move_the_hard_stop_only() -> None:
    """A command-line budget counts from the process start and stops its search early by the
    reserve; deterministic limits are not cut (the answer must not depend on start-up)."""
    clock = FakeClock()
    started = clock.now
    clock.now += 1.5  # start-up: importing placer and the solver, reading the inputs
    b = Budget(10.0, deterministic=True, clock=clock, started=started, reserve_s=1.0)
    assert b.elapsed() == pytest.approx(1.5)
    assert b.wall_remaining() == pytest.approx(7.5)  # 10 - 1 reserve - 1.5 elapsed
    assert b.remaining() == 10.0  # deterministic seconds: untouched
    clock.now += 7.4
    assert not b.expired()
    clock.now += 0.2  # past 9 s of the process: the reserve for writing begins
    assert b.expired() and b.wall_clock_stop
    wall = Budget(10.0, clock=clock, started=clock.now, reserve_s=1.0)
    assert wall.remaining() == pytest.approx(9.0)


def test_reserve_for_a_command_line_run() -> None:
    assert reserve_for(10.0) == pytest.approx(1.0)
    assert reserve_for(600.0) == RESERVE_MAX_S
    assert reserve_for(0.001) == pytest.approx(0.0005)  # never more than half the limit
    for limit in (0.001, 0.5, 10.0, 1e6):
        b = Budget.for_process(limit)
        # Inside a longer-lived process (these tests) a command counts from its own call.
        assert b.started is not None and b.started > PROCESS_STARTED
        assert 0 < b.reserve_s < limit


def test_budget_refuses_a_reserve_as_large_as_the_limit() -> None:
    with pytest.raises(ValueError, match="reserve"):
        Budget(1.0, reserve_s=1.0)


def test_console_entry_counts_from_the_process_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as a command (the console entry), start-up counts against the limit."""
    import placer.budget

    monkeypatch.setattr(placer.budget, "_COUNT_FROM", [])
    placer.budget.count_from_process_start()
    assert Budget.for_process(10.0).started == PROCESS_STARTED
