"""DualDA's training features as a shard store that ``datacredit shard run`` can fill.

:func:`create_feature_store` records, in the store's manifest, factories that build the
model and the training data (``"pkg.mod:fn"``, imported by every worker, as config files
name them) and the worker :func:`features_worker`.  Each shard is then one command (a SLURM
array task, a Ray task, a process)::

    datacredit shard run --store DIR --stage features-train --shard I

and ``DualDA(model, train_data, layer=..., batch_size=...).fit(store=DIR)`` finds the shards
done (the same model weights, layer, batch size and data: the store's fingerprint), copies
them once into one memory-mapped ``features.npy`` next to them and fits from it, so the
driver's memory stays one shard plus the solver's sparse state.

This module sits above :mod:`datacredit.dualda.dualda` and :mod:`datacredit.dualda.stages`
(the worker builds a :class:`DualDA` to run its forward passes); neither imports it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from datacredit.dualda import stages
from datacredit.dualda.dualda import DualDA
from datacredit.store import ShardStore

#: The manifest's worker spec of a store made by :func:`create_feature_store`.
FEATURES_WORKER = "datacredit.dualda.feature_store:features_worker"
#: The stage name of the training features (``--stage`` of ``datacredit shard run``).
FEATURES_STAGE = "features-train"

_BUILT: dict[str, tuple[DualDA, Any]] = {}  # factories -> (DualDA, data), once per process


def _from_factories(factories: dict[str, Any]) -> tuple[DualDA, Any]:
    from datacredit.config import load_object

    key = json.dumps(factories, sort_keys=True)
    if key not in _BUILT:
        model = load_object(factories["model"], "model", call=True)
        data = load_object(factories["train_data"], "train_data", call=True)
        dd = DualDA(
            model,
            data,
            layer=factories["layer"],
            batch_size=int(factories["batch_size"]),
            device=factories["device"],
            progress=False,
        )
        _BUILT[key] = (dd, data)
    return _BUILT[key]


def features_worker(config: dict[str, Any], shard: int, rows: tuple[int, int]) -> dict:
    """``datacredit shard run`` worker of a store made by :func:`create_feature_store`.

    Builds the model and the training data from the recorded factories (once per process)
    and extracts rows ``[begin, end)``: ``features`` float32 ``(rows, d)``, ``labels`` and
    ``predictions`` int64 ``(rows,)``.  Time: one forward pass over the shard's rows.
    """
    dd, data = _from_factories(config["factories"])
    return stages.extract_shard(dd, data, "train", shard, rows)


def create_feature_store(
    path: str | os.PathLike,
    *,
    model: str,
    train_data: str,
    layer: str,
    batch_size: int = 256,
    device: str = "cpu",
    shard_rows: int | None = None,
) -> ShardStore:
    """Make ``path`` a store of DualDA training features computable from the command line.

    Args:
        path: the store's directory (``fit(store=path)`` reads it).
        model: factory ``"pkg.mod:fn"`` returning the ``torch.nn.Module`` (weights loaded).
        train_data: factory returning the training data (any form :class:`DualDA` takes).
        layer, batch_size, device: as for :class:`DualDA`; the fit must use the same
            ``layer`` and ``batch_size`` (they are part of the store's fingerprint).
        shard_rows: rows per shard, a multiple of ``batch_size`` (default 64 batches).

    Returns:
        The :class:`~datacredit.store.ShardStore` (stage ``"features-train"``); reopened
        when ``path`` holds one of the same configuration.

    Raises:
        ValueError: a factory that cannot be imported or called, empty data, a
            ``shard_rows`` that is not a multiple of ``batch_size``, or ``path`` holding a
            store of another configuration.
    """
    factories = {
        "model": model,
        "train_data": train_data,
        "layer": layer,
        "batch_size": int(batch_size),
        "device": str(device),
    }
    dd, data = _from_factories(factories)
    return stages.create_features_store(
        dd, data, path, shard_rows=shard_rows, factories=factories, worker=FEATURES_WORKER
    )
