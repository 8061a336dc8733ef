"""Time budgets: :class:`Budget`, the one place where placer reads a clock.

A budget is started once per library call (``solve``, ``balance``, ``min_gpus``...) and passed
down to every step that may take time: enumeration, tabulation, each CP-SAT solve, explanations.
In deterministic mode every CP-SAT limit is deterministic time (CP-SAT's own work counter, the
same on an idle and on a busy machine), so the same inputs and seed give the same answer; the
wall clock stays a hard stop on top, so a deterministic run still ends near its limit on a slow
machine. Whether that hard stop was hit is recorded, because then the run is no longer
reproducible.

A command-line run counts its limit from the start of the process (:data:`PROCESS_STARTED`,
taken when placer is first imported) and holds back a reserve for the work after the search
(assembling, writing and printing the plan), so that the whole process ends near its limit
(docs/certificate.md, "Time").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Clock = Callable[[], float]

#: When placer was first imported (``placer/__init__.py`` imports this module first): the
#: start of a command-line run, up to the interpreter's own start-up.
PROCESS_STARTED = time.monotonic()

#: Share of a command-line run's limit held back for the work after the search, and its
#: floor and ceiling in seconds. On 2 busy cores, assembling the plan of Mixtral on 256 GPUs
#: (15,000 search entries), writing its 6 MB and leaving the interpreter took about 1.5 s.
RESERVE_SHARE = 0.1
RESERVE_MIN_S = 0.05
RESERVE_MAX_S = 5.0


#: Where :meth:`Budget.for_process` counts from: set to :data:`PROCESS_STARTED` by the console
#: entry (the process is one command); None (the call itself) when placer's commands run
#: inside a longer-lived process, such as the tests'.
_COUNT_FROM: list[float] = []


def count_from_process_start() -> None:
    """Make command-line budgets count from the process start (the console entry's call)."""
    _COUNT_FROM[:] = [PROCESS_STARTED]


def reserve_for(time_limit_s: float) -> float:
    """Seconds a command-line run holds back from its search for the work after it (never
    more than half the limit)."""
    share = min(RESERVE_MAX_S, max(RESERVE_MIN_S, RESERVE_SHARE * time_limit_s))
    return min(share, time_limit_s / 2)


@dataclass
class Budget:
    """Time allowed for one library call, and how much of it is left.

    Parameters
    ----------
    time_limit_s
        Wall-clock limit of the whole call, seconds (the hard stop in every mode).
    deterministic
        Give CP-SAT deterministic-time limits instead of wall-clock ones, so that the answer
        does not depend on the machine's load.
    clock
        Monotonic clock in seconds; tests inject a fake one instead of sleeping.
    started
        When the limit started counting, on ``clock`` (default: now). A command-line run
        passes :data:`PROCESS_STARTED`, so start-up counts.
    reserve_s
        Wall-clock seconds held back at the end for the work after the search: the hard stop
        is ``time_limit_s - reserve_s`` after ``started``. Deterministic limits are not cut.
    """

    time_limit_s: float
    deterministic: bool = False
    clock: Clock = time.monotonic
    started: float | None = None
    reserve_s: float = 0.0
    #: Deterministic seconds handed out so far (deterministic mode's own notion of time).
    deterministic_used: float = field(default=0.0, init=False)
    #: Set when the wall clock stopped a deterministic run (its answer may then vary).
    wall_clock_stop: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if not self.time_limit_s > 0:
            raise ValueError(f"time limit must be positive, got {self.time_limit_s!r}")
        if not 0 <= self.reserve_s < self.time_limit_s:
            raise ValueError(f"reserve must be in [0, time limit), got {self.reserve_s!r}")
        if self.started is None:
            self.started = self.clock()

    @classmethod
    def for_process(cls, time_limit_s: float, deterministic: bool = False) -> Budget:
        """The budget of a command-line run: counted from the process start (see
        :func:`count_from_process_start`), with :func:`reserve_for` held back for writing the
        result."""
        return cls(
            time_limit_s,
            deterministic,
            started=_COUNT_FROM[0] if _COUNT_FROM else None,
            reserve_s=reserve_for(time_limit_s),
        )

    def elapsed(self) -> float:
        """Wall-clock seconds since the budget started."""
        assert self.started is not None  # set in __post_init__
        return self.clock() - self.started

    def remaining(self) -> float:
        """Seconds left before the limit: deterministic seconds in deterministic mode (the
        quantity that decides what to do next), wall-clock seconds otherwise."""
        if self.deterministic:
            return max(0.0, self.time_limit_s - self.deterministic_used)
        return self.wall_remaining()

    def wall_remaining(self) -> float:
        """Wall-clock seconds left before the hard stop (the reserve excluded)."""
        return max(0.0, self.time_limit_s - self.reserve_s - self.elapsed())

    def expired(self) -> bool:
        """True when no time is left; in deterministic mode also when the hard stop passed
        (recorded in :attr:`wall_clock_stop`)."""
        if self.deterministic and self.wall_remaining() <= 0:
            self.wall_clock_stop = True
            return True
        return self.remaining() <= 0

    def share(self, fraction: float, at_least: float = 0.0, at_most: float | None = None) -> float:
        """A slice of what is left: ``fraction`` of it, clamped to [at_least, at_most] and never
        more than what is left."""
        left = self.remaining()
        seconds = max(at_least, fraction * left)
        if at_most is not None:
            seconds = min(seconds, at_most)
        return min(seconds, left)

    def limit_cpsat(self, parameters: Any, seconds: float) -> None:
        """Set a CP-SAT solve's limits for ``seconds`` of this budget.

        Deterministic mode: ``max_deterministic_time`` is the limit and the wall-clock limit is
        what is left of the hard stop. Otherwise the wall-clock limit alone.
        """
        seconds = max(seconds, 0.01)
        if self.deterministic:
            parameters.max_deterministic_time = seconds
            parameters.max_time_in_seconds = max(self.wall_remaining(), 0.01)
        else:
            parameters.max_time_in_seconds = min(seconds, max(self.wall_remaining(), 0.01))

    def charge(self, deterministic_seconds: float) -> None:
        """Record deterministic time a solve used (deterministic mode's clock)."""
        self.deterministic_used += max(0.0, deterministic_seconds)

    def record(self) -> dict[str, float | bool]:
        """What a plan records about its time: limit, mode, wall time, deterministic time used,
        and whether the wall clock stopped a deterministic run."""
        return {
            "time_limit_s": self.time_limit_s,
            "deterministic": self.deterministic,
            "wall_time_s": round(self.elapsed(), 3),
            "deterministic_time_used": round(self.deterministic_used, 3),
            "wall_clock_stop": self.wall_clock_stop,
        }
