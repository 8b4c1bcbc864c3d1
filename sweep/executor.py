"""What runs a plan's tasks: the interface the sweep asks of a runner, and what it hands back.

Job: name the interface, nothing more. Two runners implement it: ``sweep.fanout.Cluster`` (Ray,
local or a cluster) and ``sweep.inline.Inline`` (threads of this process, for a small local
sweep); ``sweep.app.choose_runner`` picks one. Both run ``sweep.simulate.run_batch`` on each
task, so a point's values do not depend on the runner. Free of Ray: workers import ``Outcome``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sweep.plan import Task
    from sweep.simulate import PointSpec, Settings


class Outcome(NamedTuple):
    """A finished simulation: the dataset's variables for it, or the error it ended with."""

    sim_id: int
    values: dict[str, Any] | None
    error: str | None


@runtime_checkable
class Executor(Protocol):
    """Runs tasks of simulations and yields their outcomes as they finish (a context manager:
    ``start`` on entry, ``stop`` on exit, ``failed`` when leaving on an exception)."""

    #: Runs on this machine only, so the machine's memory is the limit a point must fit in.
    local: bool

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...

    def start(self) -> None: ...

    def stop(self, failed: bool = False) -> None: ...

    @property
    def cpus(self) -> int:
        """CPUs the tasks share (the plan cuts shared tasks to keep them busy)."""
        ...

    def largest_node_memory(self) -> int:
        """The largest memory a task can request, in bytes; 0 when requests mean nothing."""
        ...

    def check_live(self) -> None:
        """Refuse (ConfigError, one line) to run points of the live kernel where none can run."""
        ...

    def map_unordered(self, tasks: Sequence[Task], specs: Sequence[PointSpec],
                      settings: Settings, poll: float = 0.5) -> Iterator[list[Outcome]]:
        """Run ``tasks`` (their ``sim_ids`` index ``specs``); yield lists of outcomes as tasks
        finish, and ``[]`` at least every ``poll`` seconds so the caller flushes on time."""
        ...
