"""The executor protocol: how a stage's shards are dispatched, and the one driver loop.

A *stage* is a pure function ``fn(shard) -> result`` of a shard id (its configuration is
bound into ``fn``, e.g. with :func:`functools.partial`). ``executor`` is one of:

* ``None``: serial, in this process (the default everywhere; today's behaviour);
* any :class:`concurrent.futures.Executor` (threads or processes; ``fn`` must pickle for
  processes);
* a :class:`RayExecutor`: Ray tasks, or Ray actors that keep ``fn`` (and the model it holds)
  loaded, with ``num_gpus`` per actor.

Results come back in completion order but every consumer merges them by shard id, so the
output is bit-identical whatever the executor.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from datacredit.models._data import progress as _progress_bar
from datacredit.store import ShardStore, compute_shard

__all__ = ["RayExecutor", "ShardRows", "map_shards", "run_stage", "iter_results"]

# Ray >= 2.5x logs a token-authentication warning (and where it saved the token) on every
# local ray.init: noise the user cannot act on inside a library call.  It is dropped, and
# explained in one line, once per process.
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_ray_auth_explained = False


class _DropRayTokenAuth(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.dropped = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "token" in record.getMessage().lower():
            self.dropped = True
            return False
        return True


@contextlib.contextmanager
def ray_token_auth_explained_once() -> Iterator[None]:
    """Keep Ray's token-auth log lines out of the terminal during ``ray.init``; the first
    time they occur in a process, one ``UserWarning`` says what they meant instead."""
    global _ray_auth_explained
    logger = logging.getLogger(_RAY_AUTH_LOGGER)
    drop = _DropRayTokenAuth()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
    if drop.dropped and not _ray_auth_explained:
        _ray_auth_explained = True
        warnings.warn(
            "Ray started its local runtime with token authentication (Ray's default; the "
            "token lives in ~/.ray/auth_token). Set RAY_AUTH_MODE=token or "
            "RAY_AUTH_MODE=disabled to choose yourself; this note is shown once per process",
            UserWarning,
            stacklevel=3,
        )


class RayExecutor:
    """Run shards on Ray: as tasks (``actors=None``) or on a pool of ``actors`` actors.

    Args:
        actors: ``None`` for one Ray task per shard (``fn`` is put in the object store
            once and shared); an int for that many long-lived actors, each holding its own
            copy of ``fn`` (so a model inside it is loaded once per actor, not per shard).
            A dead actor is restarted by Ray and its shard retried.
        num_cpus: CPUs reserved per task / actor.
        num_gpus: GPUs reserved per task / actor (e.g. 1 for a diffusion model per GPU).
        max_retries: retries of a failed task, or restarts of a dead actor (-1: unlimited).
        address: passed to ``ray.init`` when Ray is not initialised yet (``None``: a local
            runtime, or ``RAY_ADDRESS``).

    Raises ``ImportError`` with the install command when Ray is missing.
    """

    def __init__(
        self,
        *,
        actors: int | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
        max_retries: int = 3,
        address: str | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ImportError("RayExecutor needs Ray: pip install 'datacredit[ray]'") from exc
        if actors is not None and (
            isinstance(actors, bool) or not isinstance(actors, int) or actors < 1
        ):
            raise ValueError(f"actors must be None or a positive integer, got {actors!r}")
        if not (isinstance(num_cpus, (int, float)) and num_cpus >= 0):
            raise ValueError(f"num_cpus must be a non-negative number, got {num_cpus!r}")
        if not (isinstance(num_gpus, (int, float)) and num_gpus >= 0):
            raise ValueError(f"num_gpus must be a non-negative number, got {num_gpus!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < -1:
            raise ValueError(f"max_retries must be an integer >= -1, got {max_retries!r}")
        self.actors, self.num_cpus, self.num_gpus = actors, num_cpus, num_gpus
        self.max_retries = max_retries
        self._ray = ray
        if not ray.is_initialized():
            with ray_token_auth_explained_once():
                ray.init(address=address)

    def map_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator:
        """Yield ``(item, fn(item))`` as they finish (order not guaranteed)."""
        ray = self._ray
        items = list(items)
        if not items:
            return
        opts = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.actors is None:
            task = ray.remote(max_retries=self.max_retries, **opts)(_call)
            fn_ref = ray.put(fn)
            pending = {task.remote(fn_ref, it): it for it in items}
            try:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    for ref in done:
                        yield pending.pop(ref), ray.get(ref)
            finally:
                # A failed shard (or a consumer that stops early) must not leave tasks
                # writing behind the caller's back: cancel them and wait until they end.
                for ref in pending:
                    ray.cancel(ref)
                self._settle(list(pending))
            return
        actor_cls = ray.remote(
            max_restarts=self.max_retries, max_task_retries=self.max_retries, **opts
        )(_ShardActor)
        pool = [actor_cls.remote(fn) for _ in range(min(self.actors, len(items)))]
        queue = list(reversed(items))
        pending = {}
        for actor in pool:
            it = queue.pop()
            pending[actor.run.remote(it)] = (actor, it)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    actor, it = pending.pop(ref)
                    result = ray.get(ref)
                    if queue:
                        nxt = queue.pop()
                        pending[actor.run.remote(nxt)] = (actor, nxt)
                    yield it, result
        finally:
            for actor in pool:
                ray.kill(actor)
            self._settle(list(pending))

    def _settle(self, refs: list) -> None:
        """Wait (up to a minute) until cancelled or killed work has ended."""
        if refs:
            self._ray.wait(refs, num_returns=len(refs), timeout=60.0)

    def __repr__(self) -> str:
        return (
            f"RayExecutor(actors={self.actors}, num_cpus={self.num_cpus}, num_gpus={self.num_gpus})"
        )


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


class _ShardActor:
    """A Ray actor holding one stage function (and whatever model it keeps loaded)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def run(self, item: Any) -> Any:
        return self.fn(item)


def iter_results(executor: Any, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator:
    """``(item, fn(item))`` pairs from ``executor`` in completion order (see module doc)."""
    items = list(items)
    if executor is None:
        for it in items:
            yield it, fn(it)
    elif isinstance(executor, RayExecutor) or hasattr(executor, "map_unordered"):
        yield from executor.map_unordered(fn, items)
    elif isinstance(executor, cf.Executor):
        futures = {executor.submit(fn, it): it for it in items}
        try:
            for fut in cf.as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()
            # Running shards cannot be stopped: wait for them, so that nothing writes into
            # the store after the caller has seen the failure.
            cf.wait(futures)
    else:
        raise TypeError(
            "executor must be None, a concurrent.futures.Executor or a "
            f"datacredit.distributed.RayExecutor, got {type(executor).__name__}"
        )


def map_shards(
    fn: Callable[[int], Any],
    n_shards: int,
    *,
    executor: Any = None,
    progress: bool = False,
    desc: str = "shards",
) -> list[Any]:
    """``[fn(0), ..., fn(n_shards - 1)]`` computed by ``executor``, in shard order.

    For stages whose per-shard results are small enough to return to the driver (search
    candidates, utilities). One progress bar across all workers.
    """
    out: list[Any] = [None] * n_shards
    bar = _progress_bar(None, progress, n_shards, desc) if progress else None
    for shard, result in iter_results(executor, fn, range(n_shards)):
        out[shard] = result
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out


class ShardRows:
    """``fn(shard, rows)`` as a one-argument stage ``shard -> fn(shard, (begin, end))`` over
    ``n_rows`` rows in shards of ``shard_rows`` (picklable when ``fn`` is)."""

    def __init__(self, fn: Callable[[int, tuple[int, int]], Any], n_rows: int, shard_rows: int):
        self.fn, self.n_rows, self.shard_rows = fn, n_rows, shard_rows

    @property
    def n_shards(self) -> int:
        return -(-self.n_rows // self.shard_rows)

    def __call__(self, shard: int) -> Any:
        b = shard * self.shard_rows
        return self.fn(shard, (b, min(self.n_rows, b + self.shard_rows)))


class _WriteShard:
    """Worker side of :func:`run_stage`: compute one shard under its claim, write its files,
    return the marker (``None``: another driver holds the claim, see ``blocking``)."""

    def __init__(
        self,
        path: str,
        fn: Callable[[int, tuple[int, int]], dict],
        rows: list,
        config_hash: str,
        blocking: bool = False,
    ) -> None:
        self.path, self.fn, self.rows, self.config_hash = path, fn, rows, config_hash
        self.blocking = blocking

    def __call__(self, shard: int) -> dict | None:
        rows = tuple(self.rows[shard])
        return compute_shard(
            self.path, shard, rows, self.fn, self.config_hash, blocking=self.blocking
        )


def run_stage(
    store: ShardStore,
    fn: Callable[[int, tuple[int, int]], dict],
    *,
    executor: Any = None,
    progress: bool = False,
    desc: str | None = None,
) -> ShardStore:
    """Compute the shards of ``store`` that are missing, then fold them into its manifest.

    ``fn(shard, (begin, end))`` returns the shard's tensors (name -> array with
    ``end - begin`` rows). Workers write only their shard's files; this driver writes the
    manifest. Shards already done (by an earlier, possibly killed run, or by a SLURM array
    through ``datacredit shard run``) are not recomputed; done shards whose file fails its
    SHA-256 are (see :meth:`ShardStore.refresh`). Another driver running on the same store
    at the same time is a cooperator: the shards it has claimed are skipped, then waited
    for and adopted once it finishes them (see :mod:`datacredit.store`). Returns ``store``,
    complete.
    """
    store.refresh()  # verifies the done shards: a bad one is discarded and recomputed here
    todo = store.missing()
    rows = [list(store.rows(i)) for i in range(store.n_shards)]
    chash = store.manifest["config_hash"]
    bar = None
    if progress:
        bar = _progress_bar(None, True, store.n_shards, desc or store.manifest["stage"])
        if bar is not None:
            bar.update(store.n_shards - len(todo))
    try:
        # First the shards nobody else is computing, then (blocking on their claims) the
        # ones another driver had: it has finished them by then, or died and left them.
        for blocking in (False, True):
            worker = _WriteShard(str(store.path), fn, rows, chash, blocking)
            skipped = []
            for shard, marker in iter_results(executor, worker, todo):
                if marker is None:
                    skipped.append(shard)
                elif bar is not None:
                    bar.update(1)
            todo = sorted(skipped)
            if not todo:
                break
    finally:
        if bar is not None:
            bar.close()
        store.refresh()  # even after an error: the finished shards are kept
    missing = store.missing()
    if missing:  # pragma: no cover - a worker returned without writing
        raise RuntimeError(f"{store.path}: shards {missing[:5]} were not written")
    return store
