"""The sample bank: each label's generated samples, produced once and reused by every coalition."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np

from datacredit._arrays import check_int, to_numpy
from datacredit.surrogateshap import stages
from datacredit.surrogateshap.bank_files import (
    MANIFEST,
    atomic_save_npy,
    bank_meta,
    check_label,
    claim_path,
    counts_from,
    make_chunk,
    write_manifest,
)


def _resumed_part(part: Path, size: int, first: np.ndarray | None) -> np.ndarray | None:
    """The chunk an interrupted run left in ``part``, or None (with a warning) when it is not
    the chunk this bank expects: ``size`` rows shaped and typed like the first chunk.  Read
    memory-mapped first, so a damaged header is caught before anything is allocated."""
    try:
        arr = np.load(part, mmap_mode="r", allow_pickle=False)
        ok = arr.ndim >= 1 and arr.shape[0] == size
        if first is not None:
            ok = ok and arr.shape[1:] == first.shape[1:] and arr.dtype == first.dtype
        if not ok:
            want = "?" if first is None else f"{first.dtype} {(size, *first.shape[1:])}"
            raise ValueError(f"it holds {arr.dtype} {arr.shape}, expected {want}")
        return np.array(arr)
    except Exception as exc:  # never trusted: the chunk is generated again
        warnings.warn(
            f"sample bank part {str(part)!r} is unusable and is generated again: "
            f"{type(exc).__name__}: {exc}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


class SampleBank:
    """Generated samples (or their utility features) per label.

    The proxy game's conditionals p_θ(x | y) do not depend on the coalition, so each
    label's samples are generated once; every coalition is a reweighting of the bank.

    Build with :meth:`generate` (from a generator) or directly from a dict
    ``{label: array (n_label, ...)}``.  ``path=None`` keeps everything in memory; a path
    stores one ``.npy`` per label (written atomically) plus a manifest, and an interrupted
    :meth:`generate` resumes where it stopped (finished chunks are kept).
    """

    def __init__(
        self,
        data: dict[Any, Any] | None = None,
        *,
        path: str | Path | None = None,
        label_counts: dict[Any, float] | None = None,
    ):
        self._labels: list = []
        self._mem: dict = {}
        self.path = None if path is None else Path(path)
        self.meta: dict[str, Any] = {}
        self.label_counts: dict | None = None
        if data is not None:
            if not isinstance(data, dict) or not data:
                raise ValueError("data must be a non-empty dict {label: samples}")
            for label, arr in data.items():
                label = check_label(label)
                a = to_numpy(arr, f"data[{label!r}]")
                if a.ndim < 1 or a.shape[0] == 0:
                    raise ValueError(f"data[{label!r}] must hold at least one sample")
                self._labels.append(label)
                self._mem[label] = a
            self._set_counts(label_counts)
            if self.path is not None:
                self.path.mkdir(parents=True, exist_ok=True)
                for i, label in enumerate(self._labels):
                    atomic_save_npy(self.path / f"label{i}.npy", self._mem[label])
                self._write_manifest(complete=True)

    def _set_counts(self, counts: Any) -> None:
        if counts is None:
            self.label_counts = None
            return
        if not isinstance(counts, dict):
            raise TypeError("label_counts must be a dict label -> training count")
        clean = {}
        for lab in self._labels:
            if lab not in counts:
                raise ValueError(f"label_counts has no count for label {lab!r}")
            c = float(counts[lab])
            if not np.isfinite(c) or c < 0:
                raise ValueError(f"label_counts[{lab!r}] must be finite and >= 0, got {c}")
            clean[lab] = c
        self.label_counts = clean

    # ------------------------------------------------------------------ building
    @classmethod
    def generate(
        cls,
        generator: Callable[[Any, int, int], Any],
        labels: Iterable[Any],
        n_per_label: int,
        seed: int = 0,
        *,
        path: str | Path | None = None,
        batch_size: int | None = None,
        progress: bool = True,
        transform: Callable[[np.ndarray], Any] | None = None,
        executor: Any = None,
        train_labels: Any = None,
        fingerprint: str | None = None,
        _first: np.ndarray | None = None,
    ) -> SampleBank:
        """Generate ``n_per_label`` samples for every label.

        Args:
            generator: ``generator(label, n, seed)`` returning n samples (numpy array or
                torch tensor, first axis = samples): images, latents or feature vectors.
            labels: the labels (int or str), e.g. class ids or prompt keys.
            n_per_label: samples per label.
            seed: bank seed; chunk k of label i uses a seed derived from (seed, i, k), so
                a label's samples are reproducible for a given (seed, batch_size).
            path: directory to store the bank (None: memory); existing finished labels and
                chunks there are reused (resume), provided the manifest matches.
            batch_size: samples per generator call (None: all of a label at once).
            progress: show a tqdm progress bar.
            transform: optional callable applied to each generated chunk before storing
                (e.g. a feature extractor, so the bank holds utility features).
            executor: runs the (label, chunk) shards (a ``concurrent.futures.Executor`` or
                ``datacredit.distributed.RayExecutor``; see
                ``datacredit.surrogateshap.stages``); the same bank as serial.
            train_labels: the training set's labels (n_train,); their frequencies become
                :attr:`label_counts`, the default π_S of :class:`ProxyGame` (paper eq. 4).
            fingerprint: a string identifying the generator and transform (e.g. model name
                + checkpoint hash).  Resuming at ``path`` refuses a bank made by another
                generator or transform: the manifest records their names and either this
                fingerprint or, when None, the SHA-256 of the first chunk, which a resume
                regenerates (one generator call) and compares — pass a fingerprint for
                generators that are not bit-reproducible.  The manifest is written before
                any chunk, so that every chunk on disk is attributed to its generator;
                bank files without a manifest are refused, never adopted.
            _first: internal (the executor path): chunk 0 of label 0, already generated
                and checked, so that the assembly does not call the generator again.

        Cost: n_labels · n_per_label generated samples, once.
        """
        n_per_label = check_int(n_per_label, "n_per_label", 1)
        seed = check_int(seed, "seed", 0, 2**63 - 1)
        if batch_size is not None:
            batch_size = check_int(batch_size, "batch_size", 1)
        if executor is not None:
            return stages.generate_bank(
                cls,
                generator,
                list(labels),
                n_per_label,
                seed,
                path=path,
                batch_size=batch_size,
                progress=progress,
                transform=transform,
                executor=executor,
                train_labels=train_labels,
                fingerprint=fingerprint,
            )
        if not callable(generator):
            raise TypeError(f"generator must be callable, got {type(generator).__name__}")
        labels = [check_label(lab) for lab in labels]
        if not labels:
            raise ValueError("labels is empty")
        if len(set(labels)) != len(labels):
            raise ValueError("labels contains duplicates")
        if not isinstance(n_per_label, (int, np.integer)) or n_per_label < 1:
            raise ValueError(f"n_per_label must be a positive integer, got {n_per_label!r}")
        bs = int(n_per_label) if batch_size is None else int(batch_size)
        if bs < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size!r}")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise TypeError(f"fingerprint must be a str, got {type(fingerprint).__name__}")
        bank = cls()
        bank._labels = labels
        bank.path = None if path is None else Path(path)
        if train_labels is not None:
            bank._set_counts(counts_from(labels, train_labels))
        bank.meta = bank_meta(n_per_label, seed, bs, generator, transform, fingerprint)

        def make(i: int, k: int, size: int) -> np.ndarray:
            return make_chunk(generator, transform, labels, seed, i, k, size)

        chunks = [(s, min(bs, n_per_label - s)) for s in range(0, n_per_label, bs)]
        first: np.ndarray | None = None
        if bank.path is not None:
            # The manifest (generator, fingerprint or first-chunk digest) is on disk before
            # any chunk: a kill at any point leaves only chunks it attributes.
            first = claim_path(
                bank.path,
                labels,
                bank.meta,
                bank._counts_list(),
                (lambda: _first) if _first is not None else (lambda: make(0, 0, chunks[0][1])),
            )
        total = len(labels) * len(chunks)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="sample bank", unit="batch")
        try:
            for i, label in enumerate(labels):
                final = None if bank.path is None else bank.path / f"label{i}.npy"
                if final is not None and final.exists():
                    if bar is not None:
                        bar.update(len(chunks))
                    continue
                parts = []
                for k, (_, size) in enumerate(chunks):
                    part = None if bank.path is None else bank.path / f"label{i}.part{k}.npy"
                    arr = None
                    if part is not None and part.exists():
                        arr = _resumed_part(part, size, first)
                    if arr is None:
                        arr = first if (i, k) == (0, 0) and first is not None else make(i, k, size)
                        if part is not None:
                            atomic_save_npy(part, arr)
                    parts.append(arr)
                    if bar is not None:
                        bar.update(1)
                full = np.concatenate(parts) if len(parts) > 1 else parts[0]
                if final is None:
                    bank._mem[label] = full
                else:
                    atomic_save_npy(final, full)
                    for k in range(len(chunks)):
                        p = bank.path / f"label{i}.part{k}.npy"
                        if p.exists():
                            p.unlink()
        finally:
            if bar is not None:
                bar.close()
        if bank.path is not None:
            bank._write_manifest(complete=True)
        return bank

    @classmethod
    def load(cls, path: str | Path) -> SampleBank:
        """Open a bank stored at ``path`` (samples are read lazily, memory-mapped)."""
        path = Path(path)
        man = path / MANIFEST
        if not man.exists():
            raise FileNotFoundError(f"no sample bank at {str(path)!r} (missing {MANIFEST})")
        doc = json.loads(man.read_text())
        if not doc.get("complete"):
            raise ValueError(
                f"the bank at {str(path)!r} is incomplete; run SampleBank.generate again to resume"
            )
        bank = cls()
        bank.path = path
        bank._labels = list(doc["labels"])
        bank.meta = doc.get("meta", {})
        counts = doc.get("label_counts")
        if counts is not None:
            bank._set_counts(dict(zip(bank._labels, counts)))
        return bank

    def _counts_list(self) -> list | None:
        if self.label_counts is None:
            return None
        return [self.label_counts[lab] for lab in self._labels]

    def _write_manifest(self, complete: bool) -> None:
        write_manifest(self.path, self._labels, self.meta, self._counts_list(), complete)

    # ------------------------------------------------------------------ access
    @property
    def labels(self) -> list:
        """The labels, in bank order."""
        return list(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, label: Any) -> bool:
        return label in self._labels

    def index(self, label: Any) -> int:
        """Position of ``label`` in :attr:`labels` (KeyError if absent)."""
        try:
            return self._labels.index(label)
        except ValueError:
            raise KeyError(f"label {label!r} is not in the sample bank") from None

    def samples_for(self, label: Any) -> np.ndarray:
        """What is stored for ``label``: array (n_label, ...) (memory-mapped for a bank on
        disk; KeyError for a label the bank does not hold)."""
        i = self.index(label)
        if label in self._mem:
            return self._mem[label]
        return np.load(self.path / f"label{i}.npy", mmap_mode="r", allow_pickle=False)

    def n_samples_for(self, label: Any) -> int:
        """How many samples the bank holds for ``label``."""
        return int(self.samples_for(label).shape[0])

    def samples(self, label: Any) -> np.ndarray:
        """Deprecated alias of :meth:`samples_for` (removed in the next release)."""
        warnings.warn(
            "SampleBank.samples(label) is now SampleBank.samples_for(label); the old name "
            "will be removed in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.samples_for(label)

    def n_samples(self, label: Any) -> int:
        """Deprecated alias of :meth:`n_samples_for` (removed in the next release)."""
        warnings.warn(
            "SampleBank.n_samples(label) is now SampleBank.n_samples_for(label); the old "
            "name will be removed in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.n_samples_for(label)

    def map(
        self,
        fn: Callable[[np.ndarray], Any],
        *,
        batch_size: int | None = None,
        executor: Any = None,
    ) -> SampleBank:
        """A new in-memory bank with ``fn`` applied to every label's samples (e.g. features).

        ``executor``: one shard per label (``datacredit.surrogateshap.stages``).
        """
        if executor is not None:
            return stages.map_bank(self, fn, batch_size=batch_size, executor=executor)
        data = {}
        for label in self._labels:
            x = self.samples_for(label)
            bs = x.shape[0] if batch_size is None else int(batch_size)
            outs = [
                to_numpy(fn(np.asarray(x[s : s + bs])), "fn output")
                for s in range(0, x.shape[0], bs)
            ]
            data[label] = np.concatenate(outs) if len(outs) > 1 else np.asarray(outs[0])
        return SampleBank(data, label_counts=self.label_counts)

    def __repr__(self) -> str:
        where = "memory" if self.path is None else str(self.path)
        return f"SampleBank({len(self)} labels, {where})"

    def subset(self, labels: Sequence[Any]) -> SampleBank:
        """An in-memory bank with only ``labels``."""
        counts = None
        if self.label_counts is not None:
            counts = {lab: self.label_counts[lab] for lab in labels}
        return SampleBank({lab: self.samples_for(lab) for lab in labels}, label_counts=counts)
