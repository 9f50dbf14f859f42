"""A thread-pool task runner whose futures answer "what state?" locally, not from the server.

Prefect 3.8 asks every upstream future passed as a task parameter for its state when the
task starts (to infer parent task runs). A future of the thread pool that has not
finished answers by reading the task run from the API; we submit a checkpoint's whole
chain at once, so nearly every task does one HTTP round trip per upstream stage before it
can even wait. Profiled on a cached 10-checkpoint rerun these reads were ~85% of the time
the worker threads spent, all to learn "not finished yet". In one process the pool knows
that already: a future that has not finished is ``Pending``, one that has is its final
state.
"""

from __future__ import annotations

from typing import Any

from prefect.futures import PrefectConcurrentFuture
from prefect.states import Pending, State
from prefect.task_runners import ThreadPoolTaskRunner


class LocalStateFuture(PrefectConcurrentFuture[Any]):
    """A thread-pool future whose ``state`` comes from the pool, never from the API."""

    @property
    def state(self) -> State:
        if self._final_state:
            return self._final_state
        inner = self._wrapped_future
        if inner.done() and not inner.cancelled() and inner.exception() is None:
            result = inner.result()
            if isinstance(result, State):
                self._final_state = result
                return result
        return Pending()


class LocalStateThreadPoolTaskRunner(ThreadPoolTaskRunner[Any]):
    """Prefect's thread-pool runner, returning :class:`LocalStateFuture` s."""

    def duplicate(self) -> LocalStateThreadPoolTaskRunner:
        return type(self)(max_workers=self._max_workers)

    def submit(self, task: Any, parameters: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        future = super().submit(task, parameters, *args, **kwargs)
        return LocalStateFuture(future.task_run_id, future.wrapped_future)
