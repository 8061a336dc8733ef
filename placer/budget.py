"""Time budgets: :class:`Budget`, the one place where placer reads a clock.

A budget is started once per library call (``solve``, ``balance``, ``min_gpus``...) and passed
down to every step that may take time: enumeration, tabulation, each CP-SAT solve, explanations.
In deterministic mode every CP-SAT limit is deterministic time (CP-SAT's own work counter, the
same on an idle and on a busy machine), so the same inputs and seed give the same answer; the
wall clock stays a hard stop on top, so a deterministic run still ends near its limit on a slow
machine. Whether that hard stop was hit is recorded, because then the run is no longer
reproducible.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Clock = Callable[[], float]


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
    """

    time_limit_s: float
    deterministic: bool = False
    clock: Clock = time.monotonic
    started: float = field(init=False)
    #: Deterministic seconds handed out so far (deterministic mode's own notion of time).
    deterministic_used: float = field(default=0.0, init=False)
    #: Set when the wall clock stopped a deterministic run (its answer may then vary).
    wall_clock_stop: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if not self.time_limit_s > 0:
            raise ValueError(f"time limit must be positive, got {self.time_limit_s!r}")
        self.started = self.clock()

    def elapsed(self) -> float:
        """Wall-clock seconds since the budget started."""
        return self.clock() - self.started

    def remaining(self) -> float:
        """Seconds left before the limit: deterministic seconds in deterministic mode (the
        quantity that decides what to do next), wall-clock seconds otherwise."""
        if self.deterministic:
            return max(0.0, self.time_limit_s - self.deterministic_used)
        return max(0.0, self.time_limit_s - self.elapsed())

    def wall_remaining(self) -> float:
        """Wall-clock seconds left before the hard stop."""
        return max(0.0, self.time_limit_s - self.elapsed())

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
