"""SurrogateSHAP's heavy stages shard by shard: sample-bank generation (one shard per label ×
seed chunk), its feature transform (one shard per label) and proxy-game utilities (one shard
per batch of coalitions).

Each shard uses the serial code's own seeds (``label_seed(seed, label index, chunk)``), so
the bank is the serial bank whatever the executor. The XGBoost surrogate fit and TreeSHAP
stay on one node (they are cheap next to generation).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from datacredit.distributed.executor import map_shards
from datacredit.surrogateshap.bank_files import (
    atomic_save_npy,
    bank_meta,
    callable_name,
    check_label,
    claim_path,
    counts_from,
    make_chunk,
)

DEFAULT_COALITION_BATCH = 1024


def _generate_chunk(
    generator: Callable, transform: Any, labels: list, chunks: list, seed: int, path: Any, shard
) -> Any:
    """Stage ``bank``: chunk ``shard % n_chunks`` of label ``shard // n_chunks``.

    With ``path`` the worker writes the chunk's part file (its shard only) and returns None.
    """
    i, k = divmod(shard, len(chunks))
    arr = make_chunk(generator, transform, labels, seed, i, k, chunks[k][1])
    if path is None:
        return arr
    atomic_save_npy(Path(path) / f"label{i}.part{k}.npy", arr)
    return None


def generate_bank(
    cls: Any,
    generator: Callable,
    labels: list,
    n_per_label: int,
    seed: int,
    *,
    path: Any,
    batch_size: int | None,
    progress: bool,
    transform: Any,
    executor: Any,
    train_labels: Any = None,
    fingerprint: str | None = None,
) -> Any:
    """``SampleBank.generate(..., executor=...)``: the missing (label, chunk) shards on
    ``executor``, then the serial assembly (which finds every chunk done). Same bank."""
    if not callable(generator):
        raise TypeError(f"generator must be callable, got {type(generator).__name__}")
    labels = [check_label(lab) for lab in labels]
    if not labels or len(set(labels)) != len(labels):
        raise ValueError("labels must be non-empty and without duplicates")
    if isinstance(n_per_label, bool) or not isinstance(n_per_label, (int, np.integer)):
        raise ValueError(f"n_per_label must be a positive integer, got {n_per_label!r}")
    if n_per_label < 1:
        raise ValueError(f"n_per_label must be a positive integer, got {n_per_label!r}")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise TypeError(f"fingerprint must be a str, got {type(fingerprint).__name__}")
    bs = int(n_per_label) if batch_size is None else int(batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    chunks = [(s, min(bs, n_per_label - s)) for s in range(0, n_per_label, bs)]
    todo = list(range(len(labels) * len(chunks)))

    def stage_for(where: Any) -> Callable:
        return partial(_generate_chunk, generator, transform, labels, chunks, int(seed), where)

    first = None
    if path is not None:
        path = Path(path)
        counts = None
        if train_labels is not None:
            counts = [float(c) for c in counts_from(labels, train_labels).values()]
        meta = bank_meta(n_per_label, seed, bs, generator, transform, fingerprint)

        def make_first() -> np.ndarray:  # shard 0 on the executor, returned (not written)
            return _run(stage_for(None), [0], executor, False)[0]

        # The serial generate's own check and manifest (with the fingerprint or the first
        # chunk's digest), durable before any worker writes a chunk (issue 15).
        first = claim_path(path, labels, meta, counts, make_first)
        if first is not None and not any(
            (path / name).exists() for name in ("label0.npy", "label0.part0.npy")
        ):
            atomic_save_npy(path / "label0.part0.npy", first)
        todo = [
            s
            for s in todo
            if not (path / f"label{s // len(chunks)}.npy").exists()
            and not (path / f"label{s // len(chunks)}.part{s % len(chunks)}.npy").exists()
        ]
    stage = stage_for(None if path is None else str(path))
    results = _run(stage, todo, executor, progress)
    if path is None:
        queue = {
            lab: [results[i * len(chunks) + k] for k in range(len(chunks))]
            for i, lab in enumerate(labels)
        }

        def replay(label: Any, size: int, _seed: int) -> np.ndarray:
            return queue[label].pop(0)

        bank = cls.generate(
            replay,
            labels,
            n_per_label,
            seed,
            batch_size=bs,
            progress=False,
            train_labels=train_labels,
            fingerprint=fingerprint,
        )
        bank.meta["generator"] = callable_name(generator)
        bank.meta["transform"] = callable_name(transform)
        return bank
    # Every chunk is on disk: the serial assembly only reads them (its own check of the
    # manifest reuses the first chunk made and checked above) and completes the manifest.
    return cls.generate(
        generator,
        labels,
        n_per_label,
        seed,
        path=path,
        batch_size=bs,
        progress=False,
        transform=transform,
        train_labels=train_labels,
        fingerprint=fingerprint,
        _first=first,
    )


def _run(stage: Callable, todo: list, executor: Any, progress: bool) -> dict:
    out = map_shards(
        _Indexed(stage, todo), len(todo), executor=executor, progress=progress, desc="sample bank"
    )
    return dict(zip(todo, out))


class _Indexed:
    """``j -> stage(todo[j])`` (picklable)."""

    def __init__(self, stage: Callable, todo: list) -> None:
        self.stage, self.todo = stage, todo

    def __call__(self, j: int) -> Any:
        return self.stage(self.todo[j])


def _map_label(bank: Any, fn: Callable, batch_size: Any, i: int) -> np.ndarray:
    """Stage ``bank-map``: ``fn`` over one label's samples, in batches (as ``SampleBank.map``)."""
    label = bank.labels[i]
    sub = type(bank)({label: np.asarray(bank.samples_for(label))})
    return sub.map(fn, batch_size=batch_size).samples_for(label)


def map_bank(bank: Any, fn: Callable, *, batch_size: int | None, executor: Any) -> Any:
    """``SampleBank.map(fn, executor=...)``: one shard per label; same bank as serial."""
    parts = map_shards(partial(_map_label, bank, fn, batch_size), len(bank), executor=executor)
    return type(bank)(dict(zip(bank.labels, parts)))


def _utilities(game: Any, Z: np.ndarray, batch: int, shard: int) -> np.ndarray:
    """Stage ``utilities``: v̂ of coalitions ``Z[shard * batch : (shard + 1) * batch]``."""
    return game(Z[shard * batch : (shard + 1) * batch])


def utilities(game: Any, Z: Any, *, executor: Any, batch_size: int | None = None) -> np.ndarray:
    """``ProxyGame(Z, executor=...)``: the coalitions in batches of ``batch_size`` (default
    1,024), concatenated in order: float64 ``(m,)``, the same whatever the executor."""
    Z = np.asarray(Z)
    if Z.ndim != 2 or Z.shape[1] != game.n_players:
        raise ValueError(f"Z must have shape (m, {game.n_players}), got {Z.shape}")
    batch = DEFAULT_COALITION_BATCH if batch_size is None else int(batch_size)
    if batch < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if Z.shape[0] == 0:
        return np.empty(0)
    parts = map_shards(
        partial(_utilities, game, Z, batch), -(-Z.shape[0] // batch), executor=executor
    )
    return np.concatenate(parts)
