"""GMValuator out of core: embeddings, inverted lists and search, shard by shard.

``GMValuator.fit(train_data, store=DIR)`` lands here. Under ``DIR``:

* ``embeddings/``: the training embeddings, one shard of ``shard_rows`` rows per file
  (tensors ``embeddings`` float32 ``(rows, d)``); resumable, skipped when complete;
* ``ivf-nlist{nlist}-seed{seed}/coarse/``: the IVF coarse quantizer (``index="ivf"``),
  k-means on a seeded sample of the shards;
* ``ivf-nlist{nlist}-seed{seed}/lists/``: per training shard, each row's inverted list
  (``lists`` int32; stores written before issue 24's last change also hold an unused
  ``order``);
* ``pq-m{m}-nbits{b}-nlist{nlist}-seed{seed}/`` (``index="pq"``): ``quantizer.npz``
  (trained on a seeded sample) and ``codes/`` (per shard: ``codes`` uint8, ``lists``).

``value()`` then searches every training shard (per-shard exact top-``r`` inside the probed
lists, or over the whole shard for ``index="exact"``), merges the per-shard candidates in
shard order with ties to the lower training index (one k-way merge, so the result does not
depend on the executor), re-ranks with rows read from the shards' memory maps, and sums
the values per training shard (each shard owns its samples' sums). Anonymous memory stays
``O(n_gen * recall + shard_rows * 8 + nlist * d)``; the embeddings are file-backed.
"""

from __future__ import annotations

import hashlib
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from datacredit._arrays import as_float_matrix
from datacredit._scratch import scratch_array
from datacredit.distributed.executor import map_shards, run_stage
from datacredit.gmvaluator.calibration import (
    Calibration,
    apply_calibration,
    calibrate_ivf,
    calibrate_pq,
    calibration_rows,
    diagnostic_rows,
    search_diagnostics,
)
from datacredit.gmvaluator.contributions import softmax_weights
from datacredit.gmvaluator.result import GMValuation
from datacredit.gmvaluator.search import AUTO_IVF_MIN_TRAIN, candidate_distances, pq_settings
from datacredit.kernels import build_inverted_lists, gram_topk, ivf_flat_search, kmeans
from datacredit.models._data import data_len, take
from datacredit.store import ShardStore

DEFAULT_SHARD_ROWS = 262_144
# Rows encoded per encoder call inside a shard (rounded to whole encoder batches).
ENCODE_PIECE = 65_536
# k-means sample: rows per coarse centroid (as the in-core kmeans' own cap).
KMEANS_POINTS_PER_LIST = 64
_INT64_MAX = np.iinfo(np.int64).max


def _rows_of(data: Any, begin: int, end: int) -> Any:
    if isinstance(data, np.ndarray) or hasattr(data, "detach"):
        return data[begin:end]  # a slice: a view of memory-mapped inputs, no copy
    return take(data, np.arange(begin, end))


def _embed_shard(encoder: Any, data: Any, shard: int, rows: tuple[int, int]) -> dict:
    """Stage ``embeddings``: encoder(train_data[begin:end]) as float32 rows.

    Encoded in pieces of whole encoder batches written into one output array, so the
    shard's embeddings exist once in memory (not once per batch plus the concatenation).
    """
    b, e = rows
    bs = int(getattr(encoder, "batch_size", 0) or 0)
    step = bs * max(1, ENCODE_PIECE // bs) if bs > 0 else ENCODE_PIECE
    out = None
    for s in range(b, e, step):
        part = as_float_matrix(
            encoder.encode(_rows_of(data, s, min(e, s + step))), "training embeddings"
        )
        if part.shape[0] != min(e, s + step) - s:
            raise ValueError(
                f"the encoder returned {part.shape[0]} rows for {min(e, s + step) - s} "
                "training samples"
            )
        if out is None:
            out = np.empty((e - b, part.shape[1]), np.float32)
        elif part.shape[1] != out.shape[1]:
            raise ValueError(
                f"the encoder returned {part.shape[1]}-d embeddings, earlier {out.shape[1]}-d"
            )
        out[s - b : s - b + part.shape[0]] = part
    return {"embeddings": out}


EMBED_WORKER = "datacredit.gmvaluator.stages:embed_worker"
_BUILT: dict[str, tuple[Any, Any]] = {}  # factories -> (encoder, data), once per process


def _from_factories(factories: dict) -> tuple[Any, Any]:
    import json

    from datacredit.config import load_object
    from datacredit.models.encoders import make_encoder

    key = json.dumps(factories, sort_keys=True)
    if key not in _BUILT:
        spec = factories["encoder"]
        enc = (
            spec
            if spec in ("pixels", "precomputed") or spec.startswith("open_clip")
            else (load_object(spec, "encoder", call=True))
        )
        encoder = make_encoder(
            enc, device=factories["device"], batch_size=int(factories["batch_size"])
        )
        _BUILT[key] = (encoder, load_object(factories["train_data"], "train_data", call=True))
    return _BUILT[key]


def embed_worker(config: dict, shard: int, rows: tuple[int, int]) -> dict:
    """``datacredit shard run`` worker of an embeddings store made by
    :func:`create_embedding_store`: builds the encoder and the training data from the
    recorded factories (once per process) and encodes rows ``[begin, end)``."""
    encoder, data = _from_factories(config["factories"])
    return _embed_shard(encoder, data, shard, rows)


def create_embedding_store(
    path: str | os.PathLike,
    *,
    encoder: str,
    train_data: str,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    batch_size: int = 256,
    device: str = "cpu",
) -> ShardStore:
    """Make ``path/embeddings`` computable from the command line (one SLURM task per shard).

    ``encoder``: ``"pixels"``, ``"open_clip:..."`` or a factory ``"pkg.mod:fn"`` returning
    the encoder; ``train_data``: a factory returning the training samples (both imported by
    every worker). Then run ``datacredit shard run --store PATH --stage embeddings --shard
    I`` for each shard and ``GMValuator(encoder=<the same encoder>, batch_size=...)
    .fit(train_data, store=PATH, shard_rows=...)``, which finds the shards done.
    """
    from types import SimpleNamespace

    factories = {
        "encoder": encoder,
        "train_data": train_data,
        "batch_size": int(batch_size),
        "device": device,
    }
    enc, data = _from_factories(factories)
    n = data_len(data, "train_data")
    if n == 0:
        raise ValueError("train_data is empty")
    config = {
        "n_train": n,
        "encoder": repr(enc),
        "fingerprint": _fingerprint(SimpleNamespace(encoder=enc), data, n),
        "factories": factories,
    }
    return ShardStore.create(
        Path(path) / "embeddings",
        method="gmvaluator",
        stage="embeddings",
        config=config,
        n_rows=n,
        shard_rows=shard_rows,
        worker=EMBED_WORKER,
    )


def _hash_rows(h: Any, rows: Any) -> None:
    # A batch of rows into the hash by content: arrays/tensors as dtype, shape and bytes;
    # list items one by one (PIL images by their pixels, str/bytes by value).
    if hasattr(rows, "detach"):
        rows = rows.detach().cpu().numpy()
    if isinstance(rows, np.ndarray) and rows.dtype != object:
        h.update(f"{rows.dtype.str}{rows.shape}".encode())
        h.update(np.ascontiguousarray(rows).reshape(-1).view(np.uint8).data)
        return
    for item in rows:
        if isinstance(item, (str, bytes)):
            h.update(b"s" + (item.encode() if isinstance(item, str) else item) + b"\0")
        elif hasattr(item, "detach") or hasattr(item, "__array_interface__") or np.isscalar(item):
            _hash_rows(
                h, np.asarray(item.detach().cpu() if hasattr(item, "detach") else item)[None]
            )
        else:  # no content to hash: its repr (an address in it makes the store never reused)
            h.update(b"r" + repr(item).encode() + b"\0")


def _fingerprint(gmv: Any, data: Any, n: int) -> str:
    """Identity of the training data and the encoder for the embeddings store's configuration.

    SHA-256 of every training row's content (streamed in pieces of ``ENCODE_PIECE`` rows:
    arrays and tensors by dtype, shape and bytes; dataset items one by one, PIL images by their
    pixels, ``str``/``bytes`` by value, anything else by ``repr``), plus the embeddings
    (rounded) of three rows, first, middle and last, which tell encoders apart. A change to any
    row therefore changes the fingerprint and a store of other data is refused, never reused.
    O(n * row bytes) of hashing (about 1 GB/s), small next to encoding the rows. Items named
    by a path (``str``) are hashed by the path, not by the file's bytes.
    """
    h = hashlib.sha256(b"gmvaluator-fingerprint-v2\0")
    for begin in range(0, n, ENCODE_PIECE):
        _hash_rows(h, _rows_of(data, begin, min(n, begin + ENCODE_PIECE)))
    idx = np.unique([0, n // 2, n - 1])
    emb = as_float_matrix(gmv.encoder.encode(take(data, idx)), "training embeddings")
    h.update(np.round(emb.astype(np.float64), 4).tobytes())
    return h.hexdigest()


class ShardedEmbeddings:
    """The training embeddings of an ``embeddings/`` store: shape, rows, memory-mapped shards."""

    def __init__(self, store: ShardStore) -> None:
        self.store = store
        spec = store.manifest["tensors"]["embeddings"]
        self.shape = (store.n_rows, int(spec["row_shape"][0]))
        self.dtype = np.dtype(spec["dtype"])

    def shard(self, s: int) -> np.ndarray:
        """Shard ``s``'s embeddings ``(rows, d)`` float32, memory-mapped read-only."""
        return self.store.shard(s)["embeddings"]

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` (any shape) gathered across shards: ``(*indices.shape, d)``."""
        return self.store.take("embeddings", indices)

    def __repr__(self) -> str:
        return f"ShardedEmbeddings({self.shape}, {self.store.n_shards} shards)"


def _lists_shard(
    emb: ShardedEmbeddings, coarse: np.ndarray, n_threads: Any, with_order: bool, shard: int, rows
):
    """Stage ``lists``: nearest coarse centroid of each row.  ``with_order``: also the rows
    ordered by list (``order``), which stores written before it was dropped hold (nothing
    reads it; a resumed old store keeps every shard's tensors alike)."""
    lists = gram_topk(emb.shard(shard), coarse, 1, metric="l2", largest=False, n_threads=n_threads)[
        1
    ][:, 0].astype(np.int32)
    if with_order:
        return {"lists": lists, "order": np.argsort(lists, kind="stable").astype(np.int32)}
    return {"lists": lists}


def fit_out_of_core(
    gmv: Any,
    train_data: Any,
    store: str | os.PathLike,
    *,
    executor: Any = None,
    shard_rows: int | None = None,
) -> Any:
    """``GMValuator.fit(train_data, store=...)``: see the module docstring. Returns ``gmv``."""
    n = data_len(train_data, "train_data")
    if n == 0:
        raise ValueError("train_data is empty")
    if gmv.index not in ("auto", "ivf", "exact", "pq"):
        raise ValueError(
            f"fit(store=...) supports index='auto', 'ivf', 'pq' or 'exact', got index={gmv.index!r}"
        )
    gmv.check_train_rows(n)
    shard_rows = DEFAULT_SHARD_ROWS if shard_rows is None else shard_rows
    root = Path(store)
    t0 = time.perf_counter()
    config = {
        "n_train": n,
        "encoder": repr(gmv.encoder),
        "fingerprint": _fingerprint(gmv, train_data, n),
    }
    worker = None
    if (root / "embeddings" / "manifest.json").is_file():
        # A store made by create_embedding_store (shards from the command line): the same
        # configuration plus the factories its workers import.
        old = ShardStore(root / "embeddings")
        if "factories" in old.config:
            config["factories"] = old.config["factories"]
            worker = old.manifest.get("worker")
    emb_store = ShardStore.create(
        root / "embeddings",
        method="gmvaluator",
        stage="embeddings",
        config=config,
        n_rows=n,
        shard_rows=shard_rows,
        worker=worker,
    )
    run_stage(
        emb_store,
        partial(_embed_shard, gmv.encoder, train_data),
        executor=executor,
        progress=gmv.progress,
        desc="embedding (shards)",
    )
    emb = ShardedEmbeddings(emb_store)
    t1 = time.perf_counter()
    gmv.train_embeddings = None
    gmv._store = emb
    gmv._executor = executor
    gmv._train_data = train_data if gmv._distance is not None else None
    gmv._pq = gmv._codes = gmv._lists = gmv._faiss = gmv._ivf = None
    gmv._calibration_memo = None  # (settings key, Calibration) of this fit
    gmv._pq_store = None
    gmv.index_ = gmv.index
    if gmv.index == "auto":
        gmv.index_ = "exact" if n < AUTO_IVF_MIN_TRAIN else "ivf"
    if gmv.index_ == "ivf":
        gmv._ivf = _build_ivf(gmv, emb, root, config, executor)
    elif gmv.index_ == "pq":
        gmv._pq, gmv._pq_store = _build_pq(gmv, emb, root, config, executor)
    gmv._fit_times = {"embed_train_s": t1 - t0, "build_index_s": time.perf_counter() - t1}
    return gmv


def _build_ivf(gmv: Any, emb: ShardedEmbeddings, root: Path, config: dict, executor: Any):
    n = emb.shape[0]
    nlist = gmv.pq_nlist or max(1, int(round(np.sqrt(n))))
    if nlist > n:
        raise ValueError(f"pq_nlist = {nlist} exceeds the number of training samples {n}")
    nprobe = gmv.pq_nprobe or max(1, nlist // 16)
    if nprobe > nlist:
        raise ValueError(f"pq_nprobe = {nprobe} must not exceed pq_nlist = {nlist}")
    coarse_cfg = {**config, "nlist": nlist, "seed": int(gmv.seed)}
    # One index directory per (nlist, seed): another index reuses the same embeddings.
    root = root / f"ivf-nlist{nlist}-seed{int(gmv.seed)}"
    coarse_store = ShardStore.create(
        root / "coarse",
        method="gmvaluator",
        stage="coarse",
        config=coarse_cfg,
        n_rows=nlist,
        shard_rows=nlist,
    )

    def train(_shard: int, _rows: tuple[int, int]) -> dict:
        # Trained on a seeded sample gathered from the shards (never all N in memory).
        m = min(n, KMEANS_POINTS_PER_LIST * nlist)
        rows = np.sort(np.random.default_rng(gmv.seed).choice(n, m, replace=False))
        return {"centroids": kmeans(emb.take(rows), nlist, seed=gmv.seed)}

    run_stage(coarse_store, train)  # one shard, on the driver
    coarse = np.ascontiguousarray(coarse_store.shard(0)["centroids"])
    lists_store = ShardStore.create(
        root / "lists",
        method="gmvaluator",
        stage="lists",
        config={**coarse_cfg, "coarse_sha256": hashlib.sha256(coarse.tobytes()).hexdigest()},
        n_rows=n,
        shard_rows=int(emb.store.manifest["shard_rows"]),
    )
    with_order = "order" in lists_store.manifest.get("tensors", {})
    run_stage(
        lists_store,
        partial(_lists_shard, emb, coarse, gmv.n_threads, with_order),
        executor=executor,
        progress=gmv.progress,
        desc="inverted lists (shards)",
    )
    sizes = np.zeros(nlist, np.int64)
    for i in range(lists_store.n_shards):  # rows per list, for the recall calibration
        sizes += np.bincount(np.asarray(lists_store.shard(i)["lists"]), minlength=nlist)
    return {"coarse": coarse, "nprobe": nprobe, "lists": lists_store, "sizes": sizes}


def _lists_of(ivf: dict, shard_rows: int, idx: np.ndarray) -> np.ndarray:
    """Inverted list of the training rows ``idx`` (any shape), read shard by shard."""
    flat = np.asarray(idx, np.int64).ravel()
    out = np.empty(flat.shape, np.int64)
    shard = flat // shard_rows
    for s in np.unique(shard):
        sel = shard == s
        out[sel] = np.asarray(ivf["lists"].shard(int(s))["lists"])[flat[sel] - s * shard_rows]
    return out.reshape(np.shape(idx))


def calibrate(
    gmv: Any, queries: np.ndarray, exact: np.ndarray, executor: Any = None
) -> Calibration:
    """The recall calibration of a store-backed fit on ``queries`` whose exact top-k (over
    all shards) is ``exact``: see :mod:`datacredit.gmvaluator.calibration`."""
    n = gmv._store.shape[0]
    if gmv.index_ == "ivf":
        shard_rows = int(gmv._store.store.manifest["shard_rows"])
        return calibrate_ivf(
            queries,
            exact,
            gmv._ivf["coarse"],
            partial(_lists_of, gmv._ivf, shard_rows),
            gmv._ivf["sizes"],
            n,
            gmv.target_recall,
            gmv.pq_nprobe,
            gmv.index == "auto",
            gmv.n_threads,
        )
    pq = gmv._pq
    return calibrate_pq(
        exact,
        lambda r, nprobe: recall_candidates(gmv, queries, executor, r, nprobe, "pq")[1],
        n,
        gmv.recall,
        gmv._recall_pinned,
        pq.nlist,
        pq.nprobe if pq.nlist else 1,
        gmv.pq_nprobe is not None,
        gmv.target_recall,
    )


def _pq_codes_shard(emb: ShardedEmbeddings, pq: Any, shard: int, rows) -> dict:
    """Stage ``pq-codes``: the shard's PQ codes (and coarse lists with an IVF)."""
    x = emb.shard(shard)
    out = {"codes": pq.encode(x)}
    if pq.nlist is not None:
        out["lists"] = pq.assign(x).astype(np.int64)
    return out


def _build_pq(gmv: Any, emb: ShardedEmbeddings, root: Path, config: dict, executor: Any):
    """PQ (optionally IVF-PQ) trained on a seeded sample, codes encoded shard by shard."""
    from datacredit.kernels import ProductQuantizer

    n, d = emb.shape
    m, nbits, nlist, nprobe = pq_settings(gmv, n, d)
    root = root / f"pq-m{m}-nbits{nbits}-nlist{nlist or 0}-seed{int(gmv.seed)}"
    root.mkdir(parents=True, exist_ok=True)
    file = root / "quantizer.safetensors"
    if file.exists():
        pq = ProductQuantizer.load(file, n_threads=gmv.n_threads)
    else:
        # The in-core training caps its samples the same way (256 per code, 64 per list).
        cap = max(256 << nbits, 64 * (nlist or 0))
        rows = np.sort(np.random.default_rng(gmv.seed).choice(n, min(n, cap), replace=False))
        pq = ProductQuantizer(
            d, m, nbits, nlist=nlist, nprobe=nprobe, seed=gmv.seed, n_threads=gmv.n_threads
        )
        pq.train(emb.take(rows))
        pq.save(file)  # atomic: a killed driver leaves no torn quantizer
    pq.nprobe = nprobe
    codes = ShardStore.create(
        root / "codes",
        method="gmvaluator",
        stage="pq-codes",
        config={
            **config,
            "m": m,
            "nbits": nbits,
            "nlist": nlist,
            "seed": int(gmv.seed),
            "quantizer_sha256": hashlib.sha256(
                pq.centroids.tobytes()
                + (b"" if pq.coarse_centroids is None else pq.coarse_centroids.tobytes())
            ).hexdigest(),
        },
        n_rows=n,
        shard_rows=int(emb.store.manifest["shard_rows"]),
    )
    run_stage(
        codes,
        partial(_pq_codes_shard, emb, pq),
        executor=executor,
        progress=gmv.progress,
        desc="PQ codes (shards)",
    )
    return pq, codes


def _search_pq_shard(pq: Any, codes: ShardStore, gen: np.ndarray, r: int, nprobe: int, shard):
    """ADC top-``r`` of one shard's codes (within its probed lists with an IVF)."""
    begin = shard * int(codes.manifest["shard_rows"])
    t = codes.shard(shard)
    c = np.ascontiguousarray(t["codes"])
    kk = min(r, c.shape[0])
    if "lists" in t:
        d, i = pq.search(gen, c, kk, lists=np.asarray(t["lists"]), nprobe=nprobe)
    else:
        d, i = pq.search(gen, c, kk)
    return d, np.where(i < 0, -1, i + begin)


# ---------------------------------------------------------------------- search
def _merge_best(dist: np.ndarray, idx: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``r`` per row by (distance, training index); invalid slots (-1) sort last.

    The same as a full lexsort of each row, in O(slots) instead of O(slots log slots): a
    partition finds each row's r-th distance, every slot at or below it (ties included) is
    kept, and only those are sorted.
    """
    if dist.shape[1] < r:
        pad = r - dist.shape[1]
        dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
    if dist.shape[1] > 2 * r:
        kth = np.partition(dist, r - 1, axis=1)[:, r - 1 : r]
        keep = dist <= kth
        width = int(keep.sum(1).max())
        # Kept slots first, in slot order (a stable sort of booleans is a radix pass).
        sel = np.argsort(~keep, axis=1, kind="stable")[:, :width]
        valid = np.take_along_axis(keep, sel, 1)
        dist = np.where(valid, np.take_along_axis(dist, sel, 1), np.inf)
        idx = np.where(valid, np.take_along_axis(idx, sel, 1), -1)
    key = np.where(idx < 0, _INT64_MAX, idx)
    order = np.lexsort((key, dist), axis=-1)[:, :r]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


def _search_exact_shard(emb, gen, r, n_threads, shard: int):
    """Exact top-``r`` (squared l2) of ``gen`` in one training shard; global indices."""
    begin = shard * int(emb.store.manifest["shard_rows"])
    keys = emb.shard(shard)
    kk = min(r, keys.shape[0])
    d, i = gram_topk(gen, keys, kk, metric="l2", largest=False, n_threads=n_threads)
    return d, i + begin


def _search_ivf_shard(emb, ivf, gen, probes, r, n_threads, shard: int):
    """Exact top-``r`` over the probed lists in one shard (the batched IVF kernel,
    :func:`datacredit.kernels.ivf_flat_search`, on the shard's memory-mapped rows grouped
    by list: one shard-sized copy while the shard is searched, file-backed like the shard
    itself (:func:`datacredit._scratch.scratch_array`), so that concurrent shard searches
    do not hold shard_rows × d × 4 bytes of anonymous memory each).

    Global training indices, ties to the lower index; -1 / inf where the shard's probed
    lists hold fewer than ``r`` rows.
    """
    begin = shard * int(emb.store.manifest["shard_rows"])
    keys = emb.shard(shard)
    lt = ivf["lists"].shard(shard)
    inverted = build_inverted_lists(
        keys,
        np.asarray(lt["lists"]),
        len(ivf["coarse"]),
        out=scratch_array(keys.shape, np.float32, like=keys),
    )
    kk = min(r, keys.shape[0])
    d, i = ivf_flat_search(gen, inverted, probes, kk, n_threads=n_threads)
    if kk < r:
        d = np.pad(d, ((0, 0), (0, r - kk)), constant_values=np.inf)
        i = np.pad(i, ((0, 0), (0, r - kk)), constant_values=-1)
    return d, np.where(i < 0, -1, i + begin)


def _kway(parts: list[tuple[np.ndarray, np.ndarray]], r: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard candidate lists in shard order (deterministic)."""
    dist, idx = parts[0]
    dist, idx = _merge_best(dist, idx, r)
    for d, i in parts[1:]:
        dist, idx = _merge_best(np.concatenate([dist, d], 1), np.concatenate([idx, i], 1), r)
    return dist, idx


def exact_topk(
    gmv: Any, gen: np.ndarray, r: int, executor: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``r`` over all training shards (squared l2, ties to the lower index):
    float32 distances and int64 indices ``(n_gen, r)``; ``O(n_gen * N * d)``."""
    emb = gmv._store
    parts = map_shards(
        partial(_search_exact_shard, emb, gen, r, gmv.n_threads),
        emb.store.n_shards,
        executor=executor,
    )
    return _kway(parts, r)


def recall_candidates(
    gmv: Any,
    gen: np.ndarray,
    executor: Any = None,
    r: int | None = None,
    nprobe: int | None = None,
    index: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Squared l2 distances (float32) and candidates (int64, -1 when unused), both
    ``(n_gen, r)`` (default ``recall``), of ``index`` (default: the fitted one) probing
    ``nprobe`` lists (default: the fitted one's), searched shard by shard and merged in
    shard order."""
    r = gmv.recall if r is None else r
    index = gmv.index_ if index is None else index
    if index == "exact":
        return exact_topk(gmv, gen, r, executor)
    if index == "pq":
        parts = map_shards(
            partial(_search_pq_shard, gmv._pq, gmv._pq_store, gen, r, nprobe or gmv._pq.nprobe),
            gmv._pq_store.n_shards,
            executor=executor,
            progress=gmv.progress,
            desc="PQ search (training shards)",
        )
        out_d, out_i = _kway(parts, r)
        missing = np.flatnonzero((out_i < 0).any(1))
        if missing.size:  # probed lists held fewer than `recall` codes: exact candidates
            out_d[missing], out_i[missing] = exact_topk(gmv, gen[missing], r, executor)
        return out_d, out_i
    ivf, emb = gmv._ivf, gmv._store
    _, probes = gram_topk(
        gen,
        ivf["coarse"],
        nprobe or ivf["nprobe"],
        metric="l2",
        largest=False,
        n_threads=gmv.n_threads,
    )
    # As in-core: with an l2 (or no) re-rank only the top k over the probed lists
    # matters, so k candidates are returned.
    exact_metric = gmv.rerank in ("l2", None)
    r = gmv.k if exact_metric else r
    parts = map_shards(
        partial(_search_ivf_shard, emb, ivf, gen, probes, r, gmv.n_threads),
        emb.store.n_shards,
        executor=executor,
        progress=gmv.progress,
        desc="search (training shards)",
    )
    out_d, out_i = _kway(parts, r)
    need = gmv.k if exact_metric else r
    missing = np.flatnonzero((out_i >= 0).sum(1) < need)
    if missing.size:  # probed lists held too few samples: exact fallback for those rows
        out_d[missing], out_i[missing] = exact_topk(gmv, gen[missing], r, executor)
    return out_d, out_i


def embedding_distances(gmv: Any, gen: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Exact distances (n_gen, recall) float64; candidates' rows read from the shards."""
    emb = gmv._store
    return candidate_distances(gen, cand, emb.take, emb.shape[1], gmv.rerank)


def _shard_values(shard_rows: int, n: int, top_idx, weights, shard: int) -> np.ndarray:
    """Stage ``values``: the sums of the training samples this shard owns."""
    b, e = shard * shard_rows, min(n, (shard + 1) * shard_rows)
    flat = top_idx.ravel()
    mask = (flat >= b) & (flat < e)
    return np.bincount(flat[mask] - b, weights=weights.ravel()[mask], minlength=e - b)


def value_out_of_core(gmv: Any, generated: Any, quality_scores: Any, executor: Any) -> Any:
    """``GMValuator.value`` on a store-backed fit (see the module docstring)."""

    executor = gmv._executor if executor is None else executor
    emb = gmv._store
    n_gen = data_len(generated, "generated")
    if n_gen == 0:
        raise ValueError("generated is empty")
    t0 = time.perf_counter()
    gen = as_float_matrix(
        gmv.encoder.encode(generated, progress=gmv.progress and "embedding generated"),
        "generated embeddings",
    )
    if gen.shape[0] != n_gen:
        raise ValueError(f"the encoder returned {gen.shape[0]} rows for {n_gen} generated samples")
    if gen.shape[1] != emb.shape[1]:
        raise ValueError(
            f"generated embeddings have dimension {gen.shape[1]}, training embeddings "
            f"{emb.shape[1]}"
        )
    q = gmv._quality_scores(generated, n_gen, quality_scores)
    t1 = time.perf_counter()
    cal, cal_rows = None, None
    index, r, nprobe = gmv.index_, gmv.recall, None
    diag_rows = np.zeros(0, np.int64)
    # calibrated once per fit, as in core (GMValuator._reusable_calibration): later calls
    # reuse the setting, checked on each call's held-out diagnostics rows
    reused = gmv._reusable_calibration() if gmv.index_ != "exact" else None
    if gmv.index_ != "exact":
        if gmv.target_recall is not None and reused is None:
            cal_rows = calibration_rows(n_gen, gmv.calibration_queries)
        fallback = reused is not None and reused.fallback_exact is not None
        if gmv.diagnostics_sample > 0 and not fallback:
            diag_rows = diagnostic_rows(n_gen, gmv.diagnostics_sample, cal_rows)
    # One exact pass over the shards serves the calibration and the held-out diagnostics.
    n_cal = 0 if cal_rows is None else len(cal_rows)
    exact_rows = np.concatenate([cal_rows if n_cal else diag_rows[:0], diag_rows])
    exact = exact_topk(gmv, gen[exact_rows], gmv.k, executor)[1] if len(exact_rows) else None
    if cal_rows is not None:
        cal = calibrate(gmv, gen[cal_rows], exact[:n_cal], executor)
        if n_cal == gmv.calibration_queries:  # a full sample: kept for later calls
            gmv._calibration_memo = (gmv._calibration_key(), cal)
    elif reused is not None:
        cal = reused
    if cal is not None:
        index, r, nprobe = apply_calibration(gmv, cal)
    t_cal = time.perf_counter()
    rec_dist, raw_cand = recall_candidates(gmv, gen, executor, r, nprobe, index)
    cand = raw_cand
    invalid = cand < 0
    if invalid.any():
        cand = np.where(invalid, 0, cand)
    t2 = time.perf_counter()
    if gmv.rerank is None:
        dist = np.sqrt(np.maximum(rec_dist.astype(np.float64), 0.0))
    elif gmv._distance is None:
        dist = embedding_distances(gmv, gen, cand)
    else:
        dist = gmv._image_distances(generated, cand)
    if invalid.any():
        dist = np.where(invalid, np.inf, dist)
    order = np.lexsort((cand, dist), axis=-1)[:, : gmv.k]
    top_idx = np.take_along_axis(cand, order, 1)
    top_dist = np.take_along_axis(dist, order, 1)
    weights = softmax_weights(top_dist, gmv.temperature) * q[:, None]
    shard_rows = int(emb.store.manifest["shard_rows"])
    values = np.concatenate(
        map_shards(
            partial(_shard_values, shard_rows, emb.shape[0], top_idx, weights),
            emb.store.n_shards,
            executor=executor,
        )
    )
    t3 = time.perf_counter()
    diag: dict[str, Any] = {
        "index": index,
        "rerank": gmv.rerank,
        "k": gmv.k,
        "recall": int(raw_cand.shape[1]),
        "n_train": int(emb.shape[0]),
        "n_generated": n_gen,
        "store": str(emb.store.path.parent),
        "n_shards": emb.store.n_shards,
        "embed_generated_s": t1 - t0,
        "calibration_s": t_cal - t1,
        "recall_s": t2 - t_cal,
        "rerank_and_values_s": t3 - t2,
        **getattr(gmv, "_fit_times", {}),
    }
    if gmv._pq is not None:
        diag["pq_m"], diag["pq_nbits"] = gmv._pq.m, gmv._pq.nbits
        diag["pq_nlist"], diag["pq_nprobe"] = gmv._pq.nlist, nprobe or gmv._pq.nprobe
    if gmv._ivf is not None:
        diag["pq_nlist"], diag["pq_nprobe"] = len(gmv._ivf["coarse"]), nprobe or gmv._ivf["nprobe"]
    if cal is not None:
        diag["calibration_reused"] = reused is not None
    diag.update(
        search_diagnostics(
            cal, index, exact, n_cal, diag_rows, raw_cand, top_idx, gmv.rerank, gmv.k
        )
    )
    if diag.get("held_out_below_target"):
        gmv._calibration_memo = None  # this batch differs: the next call recalibrates
    return GMValuation(values, top_idx, weights, top_dist, q, diag)
