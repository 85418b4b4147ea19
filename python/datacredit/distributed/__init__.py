"""Running heavy stages shard by shard: serially, in any ``concurrent.futures`` executor, or
on Ray (:class:`RayExecutor`), with identical results (merges by shard id).

See ``docs/distributed.md``. Ray is optional (``pip install datacredit[ray]``) and imported
only when a :class:`RayExecutor` is created.
"""

from datacredit.distributed.executor import RayExecutor, map_shards, run_stage

__all__ = ["RayExecutor", "map_shards", "run_stage"]
