"""Product quantization: k-means codebooks per sub-space, encoding and ADC search."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from datacredit import _core
from datacredit._arrays import (
    as_float_matrix,
    as_index_vector,
    check_choice,
    resolve_threads,
    to_numpy,
)
from datacredit.kernels.kmeans import kmeans, positive_int
from datacredit.kernels.pq_packed import (
    ST_VERSION,
    PackedCodes,
    check_st_format,
    is_npz,
    meta_int,
)
from datacredit.safetensors_io import load_safetensors, save_safetensors

__all__ = ["PQ_METRICS", "PackedCodes", "ProductQuantizer", "kmeans"]

PQ_METRICS = ("l2", "ip")
_FORMAT = "datacredit.ProductQuantizer/1"  # the legacy .npz files (read only)


_FASTSCAN_ENV = "DATACREDIT_PQ_FASTSCAN"
# Safetensors formats (written since 0.1; readable from C, see docs/c_api.md).
_PQ_ST_FORMAT = "datacredit.product_quantizer"


class ProductQuantizer:
    """Product quantizer with asymmetric-distance (ADC) search and fused top-k.

    A vector of ``d`` floats is cut into ``m`` sub-vectors of ``d // m`` floats, each
    replaced by the index of its nearest centroid among ``2**nbits`` centroids learned
    by k-means in that sub-space.  A code is ``m`` bytes (uint8, one per sub-space).

    Search computes, per query, lookup tables ``T[s, j]`` (squared l2 distance or inner
    product of the query's sub-vector ``s`` to centroid ``j``) and scans the codes with
    ``sum_s T[s, code_s]``, keeping the ``k`` best in a heap (ties to the lower index).
    Codes that provably cannot enter the top-k are abandoned after the first sub-spaces,
    which never changes the result: it equals a brute-force ADC over the same codes.

    Args:
        d: vector dimension, a multiple of ``m``.
        m: number of sub-spaces (bytes per code).
        nbits: bits per sub-space code, 1..8 (``ksub = 2**nbits`` centroids).
        metric: ``"l2"`` (squared Euclidean, smallest first) or ``"ip"`` (inner product,
            largest first).
        nlist: optional coarse quantizer (inverted file, IVF): ``nlist`` k-means centroids
            of the full vectors; :meth:`assign` gives each vector its list and
            ``search(..., lists=...)`` scans only the ``nprobe`` lists nearest (l2) to each
            query.  For very large N.
        nprobe: lists scanned per query (default for :meth:`search`).
        seed: seed of the training sample and k-means initialisation; training is
            deterministic for a given seed whatever the thread count.
        n_threads: threads for every call (``None``: all cores).

    With ``nbits=4``, :meth:`pack` lays the codes out for the *fast scan*: lookup tables
    quantized to 8 bits and summed 32 codes at a time with in-register byte shuffles
    (AVX2, runtime dispatch; a portable scalar path gives identical results).
    ``search(queries, pq.pack(codes), k)`` then ranks by the quantized distances (see
    :meth:`quantize_tables`): over ten times faster than the float-table scan of the same codes,
    within ``m / (2 * scale)`` of its distances.

    Memory: ``m * 2**nbits * (d // m)`` floats of centroids, ``m`` bytes per code
    (``m / 2`` bytes when packed).
    """

    def __init__(
        self,
        d: int,
        m: int,
        nbits: int = 8,
        *,
        metric: str = "l2",
        nlist: int | None = None,
        nprobe: int = 1,
        seed: int = 0,
        n_threads: int | None = None,
    ) -> None:
        self.d = positive_int(d, "d")
        self.m = positive_int(m, "m")
        if self.d % self.m:
            raise ValueError(f"d = {self.d} must be a multiple of m = {self.m}")
        nbits = positive_int(nbits, "nbits")
        if nbits > 8:
            raise ValueError(f"nbits must be in [1, 8], got {nbits}")
        self.nbits = nbits
        self.metric = check_choice(metric, "metric", PQ_METRICS)
        if (
            isinstance(seed, bool)
            or not isinstance(seed, (int, np.integer))
            or not 0 <= seed < 2**63 - 1
        ):
            raise ValueError(f"seed must be a non-negative integer below 2**63 - 1, got {seed!r}")
        self.seed = int(seed)
        self.n_threads = n_threads
        resolve_threads(n_threads)
        self.nlist = None if nlist is None else positive_int(nlist, "nlist")
        self.nprobe = positive_int(nprobe, "nprobe")
        if self.nlist is not None and self.nprobe > self.nlist:
            raise ValueError(f"nprobe = {self.nprobe} must not exceed nlist = {self.nlist}")
        self.centroids: np.ndarray | None = None
        self.coarse_centroids: np.ndarray | None = None

    # ------------------------------------------------------------------ properties
    @property
    def dsub(self) -> int:
        """Floats per sub-vector, ``d // m``."""
        return self.d // self.m

    @property
    def ksub(self) -> int:
        """Centroids per sub-space, ``2**nbits``."""
        return 1 << self.nbits

    @property
    def is_trained(self) -> bool:
        """Whether the codebooks exist (after :meth:`train` or :meth:`load`)."""
        return self.centroids is not None

    def _threads(self) -> int:
        return resolve_threads(self.n_threads)

    def _need_trained(self) -> np.ndarray:
        if self.centroids is None:
            raise RuntimeError("the ProductQuantizer is not trained: call .train(x) first")
        return self.centroids

    def _rows(self, x: Any, name: str) -> np.ndarray:
        arr = as_float_matrix(x, name)
        if arr.shape[1] != self.d:
            raise ValueError(f"{name} must have {self.d} columns (d), got shape {arr.shape}")
        return arr

    def _codes(self, codes: Any) -> np.ndarray:
        arr = to_numpy(codes, "codes")
        if arr.ndim != 2 or arr.shape[1] != self.m:
            raise ValueError(f"codes must have shape (n, {self.m}), got {arr.shape}")
        if arr.dtype != np.uint8:
            raise TypeError(f"codes must be uint8 (from .encode), got dtype {arr.dtype}")
        if arr.shape[0] == 0:
            raise ValueError("codes is empty")
        return np.ascontiguousarray(arr)

    # ------------------------------------------------------------------ API
    def train(
        self,
        x: Any,
        n_iter: int = 25,
        max_points_per_centroid: int = 256,
        *,
        coarse_iter: int = 10,
        coarse_points_per_centroid: int = 64,
    ) -> ProductQuantizer:
        """Learn the codebooks by k-means in each sub-space.

        Every sub-space starts from the same ``2**nbits`` sample rows: aligned starts
        correlate each vector's errors across sub-spaces, which ranks neighbours better
        than independent starts at the same distortion (and varies less with the seed).

        Args:
            x: ``(n, d)`` training vectors, ``n >= 2**nbits``.
            n_iter: Lloyd iterations per sub-space.
            max_points_per_centroid: at most ``max_points_per_centroid * 2**nbits`` rows,
                sampled with ``seed``, are used (keeps training of huge sets fast); an
                integer in ``[1, 2**31 - 1]``, like ``n_iter``.
            coarse_iter, coarse_points_per_centroid: the same for the coarse quantizer
                (only with ``nlist``; ``O(coarse_iter * sample * nlist * d)``).

        Complexity: ``O(n_iter * n_sample * 2**nbits * d)`` through GEMM, parallel over
        sub-spaces.  Returns ``self``.
        """
        arr = self._rows(x, "x")
        if arr.shape[0] < self.ksub:
            raise ValueError(
                f"x needs at least 2**nbits = {self.ksub} rows to train, got {arr.shape[0]}"
            )
        self.centroids = _core.pq_train(
            arr,
            self.m,
            self.nbits,
            positive_int(n_iter, "n_iter", 2**31 - 1),
            positive_int(max_points_per_centroid, "max_points_per_centroid", 2**31 - 1),
            self.seed,
            self._threads(),
        )
        if self.nlist is not None:
            if arr.shape[0] < self.nlist:
                raise ValueError(f"x needs at least nlist = {self.nlist} rows, got {arr.shape[0]}")
            self.coarse_centroids = _core.kmeans(
                arr,
                self.nlist,
                positive_int(coarse_iter, "coarse_iter"),
                positive_int(coarse_points_per_centroid, "coarse_points_per_centroid", 2**31 - 1),
                self.seed + 1,
                self._threads(),
            )
        return self

    def assign(self, x: Any) -> np.ndarray:
        """Inverted list ``(n,)`` int64 of each row of ``x`` (nearest coarse centroid, l2).

        Needs ``nlist``.  ``O(n * nlist * d)`` through the fused Gram top-k kernel.
        """
        from datacredit.kernels.gram import gram_topk

        self._need_trained()
        if self.coarse_centroids is None:
            raise RuntimeError("assign needs a coarse quantizer: create it with nlist=...")
        _, idx = gram_topk(
            self._rows(x, "x"),
            self.coarse_centroids,
            1,
            metric="l2",
            largest=False,
            n_threads=self.n_threads,
        )
        return idx[:, 0]

    def encode(self, x: Any) -> np.ndarray:
        """Codes ``(n, m)`` uint8 of ``x`` ``(n, d)``: nearest centroid per sub-space.

        Complexity ``O(n * 2**nbits * d)`` (GEMM tiles), parallel over row blocks.
        """
        cent = self._need_trained()
        return _core.pq_encode(cent, self._rows(x, "x"), self.nbits, self._threads())

    def decode(self, codes: Any) -> np.ndarray:
        """Reconstructions ``(n, d)`` float32 from ``codes`` ``(n, m)`` uint8."""
        cent = self._need_trained()
        return _core.pq_decode(cent, self._codes(codes), self.d, self.nbits, self._threads())

    def compute_tables(self, queries: Any) -> np.ndarray:
        """Lookup tables ``(nq, m, 2**nbits)`` float32 of ``queries`` ``(nq, d)``."""
        cent = self._need_trained()
        return _core.pq_compute_tables(
            cent, self._rows(queries, "queries"), self.nbits, self.metric, self._threads()
        )

    def pack(self, codes: Any, lists: Any = None) -> PackedCodes:
        """Pack 4-bit ``codes`` ``(N, m)`` uint8 (each < 16) for the fast-scan search.

        Only for ``nbits=4``.  Like faiss's ``add`` on a fast-scan index: pack once, then
        pass the :class:`PackedCodes` to :meth:`search` as often as needed.
        ``O(N m)``, parallel; memory ``N * m / 2`` bytes (plus padding to 32 codes).

        Args:
            codes: ``(N, m)`` uint8 codes from :meth:`encode`.
            lists: optional ``(N,)`` integer inverted lists of the codes (from
                :meth:`assign`, values in ``[0, nlist)``; needs ``nlist``): the codes are
                then grouped by list (layout in :class:`PackedCodes`, each list padded to
                32 codes, plus 8 bytes per code for the id map) and :meth:`search` scans
                only the ``nprobe`` lists nearest to each query.
        """
        self._need_fastscan()
        c = self._codes(codes)
        if lists is None:
            return PackedCodes(_core.pq_fastscan_pack(c, self._threads()), c.shape[0], self.m)
        self._need_trained()
        if self.coarse_centroids is None:
            raise RuntimeError("pack(lists=...) needs a coarse quantizer: create it with nlist=...")
        lst = as_index_vector(lists, "lists", c.shape[0], self.nlist)
        data, list_blocks, ids = _core.pq_fastscan_pack_ivf(c, lst, self.nlist, self._threads())
        return PackedCodes(data, c.shape[0], self.m, list_blocks, ids)

    def quantize_tables(self, tables: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The 8-bit tables the fast scan ranks with, from float ``tables`` ``(nq, m, 16)``.

        With ``T`` the float tables (negated for ``"ip"``, so smaller is better),
        ``bias_s = min_j T[s, j]``, ``range_s = max_j T[s, j] - bias_s`` (float64),
        ``scale = min(255 / max_s range_s, (65535 - m) / sum_s range_s, 1e30)`` rounded
        to float32 (1 if every range is 0) and
        ``lut[s, j] = round((T[s, j] - bias_s) * scale)`` (float32, half to even).  Entries lie in ``[0, 255]`` and any code's sum ``S`` in ``[0, 65535]``.
        Its distance is ``S / scale + bias`` (negated for ``"ip"``), within
        ``m / (2 * scale)`` (plus float rounding) of the float ADC distance.

        Returns:
            ``(lut, scale, bias)``: ``(nq, m, 16)`` uint8, ``(nq,)`` float32, ``(nq,)``
            float32 (``bias`` is the sum of the ``bias_s``).  ``O(nq * m * 16)``.
        """
        self._need_fastscan()
        t = as_float_matrix(tables, "tables", ndim=3)
        if t.shape[1:] != (self.m, 16):
            raise ValueError(f"tables must have shape (nq, {self.m}, 16), got {t.shape}")
        return _core.pq_fastscan_quantize_tables(t, self.metric, self._threads())

    def _need_fastscan(self) -> None:
        if self.nbits != 4:
            raise ValueError(
                f"the fast scan (pack / quantize_tables / PackedCodes) needs nbits=4, "
                f"this quantizer has nbits={self.nbits}"
            )

    def _search_packed(
        self, q: np.ndarray, packed: PackedCodes, k: int, nprobe: int | None, rerank: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        self._need_fastscan()
        if not isinstance(packed.data, np.ndarray) or packed.m != self.m:
            raise ValueError(f"packed codes have m = {packed.m}, this quantizer m = {self.m}")
        if packed.list_blocks is None:
            if nprobe is not None:
                raise ValueError(
                    "nprobe= needs codes packed with inverted lists: pack(codes, lists=...)"
                )
        else:
            if self.coarse_centroids is None:
                raise RuntimeError(
                    "codes packed with lists need a coarse quantizer: create it with nlist=..."
                )
            if packed.nlist != self.nlist:
                raise ValueError(
                    f"packed codes have nlist = {packed.nlist}, this quantizer nlist = {self.nlist}"
                )
            nprobe = self.nprobe if nprobe is None else positive_int(nprobe, "nprobe")
            if nprobe > self.nlist:
                raise ValueError(f"nprobe = {nprobe} must not exceed nlist = {self.nlist}")
        if not 1 <= k <= packed.n:
            raise ValueError(f"k = {k} must be in [1, N = {packed.n}]")
        if rerank is not None:
            rerank = positive_int(rerank, "rerank")
            if not k <= rerank <= packed.n:
                raise ValueError(f"rerank = {rerank} must be in [k = {k}, N = {packed.n}]")
        mode = os.environ.get(_FASTSCAN_ENV, "auto")
        if mode not in ("auto", "scalar"):
            raise ValueError(f"{_FASTSCAN_ENV} must be 'auto' or 'scalar', got {mode!r}")
        tables = self.compute_tables(q)
        threads = self._threads()
        kc = k if rerank is None else rerank
        if packed.list_blocks is None:
            out = _core.pq_fastscan_search(
                tables, packed.data, packed.n, kc, self.metric, threads, mode == "scalar"
            )
            if rerank is None:
                return out
            return _core.pq_fastscan_rerank(
                tables, packed.data, packed.n, out[1], k, self.metric, threads
            )
        from datacredit.kernels.gram import gram_topk

        _, probes = gram_topk(
            q, self.coarse_centroids, nprobe, metric="l2", largest=False, n_threads=self.n_threads
        )
        out = _core.pq_fastscan_search_ivf(
            tables,
            packed.data,
            packed.list_blocks,
            packed.ids,
            packed.n,
            np.ascontiguousarray(probes),
            kc,
            self.metric,
            threads,
            mode == "scalar",
        )
        if rerank is None:
            return out
        return _core.pq_fastscan_rerank_ivf(
            tables, packed.data, packed.positions(), out[1], k, self.metric, threads
        )

    def search(
        self,
        queries: Any,
        codes: Any,
        k: int,
        *,
        lists: Any = None,
        nprobe: int | None = None,
        rerank: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best codes per query by asymmetric distance.

        Args:
            queries: ``(nq, d)`` real array (numpy or CPU torch).
            codes: ``(N, m)`` uint8 codes from :meth:`encode`, or :class:`PackedCodes`
                from :meth:`pack` (``nbits=4``) for the fast scan.  The type of the codes
                selects the path rather than a keyword, because the fast scan needs the
                packed layout, which is built once (not per search).
            k: results per query, ``1 <= k <= N``.
            lists: optional ``(N,)`` inverted lists of the codes (from :meth:`assign`):
                then only the ``nprobe`` lists nearest to each query are scanned, and
                slots beyond the codes found hold distance ``inf`` (``-inf`` for ip) and
                index -1.  Not with :class:`PackedCodes`: pass the lists to
                :meth:`pack` instead (the packed layout is grouped by list), and the
                search of such codes is an IVF search with the same padding rule.
            nprobe: lists per query (default: the constructor's), for ``lists=`` or
                :class:`PackedCodes` packed with lists.
            rerank: only with :class:`PackedCodes`: the fast scan keeps ``rerank``
                candidates (``k <= rerank <= N``), which are then re-ranked by their exact
                float ADC distances (the float tables, summed in sub-space order as the
                unpacked search does); the ``k`` best are returned with those distances.
                Adds ``O(nq * rerank * m)``.  With lists, candidates of index -1 (fewer
                codes in the probed lists) are skipped and keep their padding.

        Returns:
            ``(distances, indices)``: float32 ``(nq, k)`` (squared l2 ascending, or inner
            products descending) and int64 ``(nq, k)`` row indices into ``codes``.
            With :class:`PackedCodes`: the ``k`` codes with the smallest quantized sums
            of :meth:`quantize_tables` (ties to the lower index) and their dequantized
            distances (``S / scale + bias``, negated for ``"ip"``).  Packed with lists:
            the same over the codes of the probed lists only, ties still to the lower
            original index (candidates equal to the heap's worst score are offered to
            the heap, which breaks ties by index, since lists are not visited in index
            order).

        Complexity: ``O(nq * N * m)`` table look-ups in the worst case, usually far fewer
        (early abandoning); memory ``O(N * m + nq * (k + m * 2**nbits))``.  Fast scan:
        ``O(nq * N * m / 64)`` 32-byte shuffles, memory ``O(nq * (k + m * 16))`` besides
        the packed codes.  Parallel over queries (and over code ranges when there are few
        queries), GIL released.  Fast scan with lists: ``O(nq * nprobe * L * m / 64)``
        shuffles for lists of ``L`` codes (rounded up to 32), parallel over queries, plus
        the coarse probes ``O(nq * nlist * d)`` and an ``O(N)`` check of the id map.
        Setting the environment variable
        ``DATACREDIT_PQ_FASTSCAN=scalar`` forces the portable fast-scan path (for tests).
        """
        cent = self._need_trained()
        q = self._rows(queries, "queries")
        if isinstance(codes, PackedCodes):
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                raise TypeError(f"k must be an integer, got {type(k).__name__}")
            if lists is not None:
                raise ValueError(
                    "lists= is not used with PackedCodes: pass the lists to pack(codes, lists=...)"
                )
            return self._search_packed(q, codes, int(k), nprobe, rerank)
        if rerank is not None:
            raise ValueError("rerank= is only used with PackedCodes (from .pack)")
        c = self._codes(codes)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an integer, got {type(k).__name__}")
        if not 1 <= k <= c.shape[0]:
            raise ValueError(f"k = {k} must be in [1, N = {c.shape[0]}]")
        if lists is None:
            if nprobe is not None:
                raise ValueError("nprobe is only used together with lists=")
            return _core.pq_search(cent, q, c, int(k), self.nbits, self.metric, self._threads())
        if self.coarse_centroids is None:
            raise RuntimeError("lists= needs a coarse quantizer: create it with nlist=...")
        nprobe = self.nprobe if nprobe is None else positive_int(nprobe, "nprobe")
        if nprobe > self.nlist:
            raise ValueError(f"nprobe = {nprobe} must not exceed nlist = {self.nlist}")
        lst = as_index_vector(lists, "lists", c.shape[0], self.nlist)
        from datacredit.kernels.gram import gram_topk

        _, probes = gram_topk(
            q, self.coarse_centroids, nprobe, metric="l2", largest=False, n_threads=self.n_threads
        )
        return _core.pq_search_ivf(
            cent,
            q,
            c,
            lst,
            self.nlist,
            np.ascontiguousarray(probes),
            int(k),
            self.nbits,
            self.metric,
            self._threads(),
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the quantizer to a safetensors file at exactly ``path``, atomically.

        Format ``datacredit.product_quantizer`` version 1 (readable by the C API,
        ``dc_pq_index_load``): tensors ``centroids`` (F32 ``(m, 2**nbits, d / m)``) and,
        with ``nlist``, ``coarse_centroids`` (F32 ``(nlist, d)``); metadata ``d``, ``m``,
        ``nbits``, ``metric``, ``seed``, ``nlist`` (0: none), ``nprobe``.
        """
        cent = self._need_trained()
        tensors = {"centroids": cent}
        if self.nlist is not None:
            if self.coarse_centroids is None:
                raise RuntimeError("the coarse quantizer is not trained: call train() first")
            tensors["coarse_centroids"] = self.coarse_centroids
        meta = {
            "format": _PQ_ST_FORMAT,
            "format_version": ST_VERSION,
            "d": str(self.d),
            "m": str(self.m),
            "nbits": str(self.nbits),
            "metric": self.metric,
            "seed": str(self.seed),
            "nlist": str(self.nlist or 0),
            "nprobe": str(self.nprobe),
        }
        save_safetensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike, *, n_threads: int | None = None) -> ProductQuantizer:
        """Read a quantizer written by :meth:`save` (or the ``.npz`` of datacredit <= 0.1's
        format 1, read with ``allow_pickle=False``)."""
        if is_npz(path):
            with np.load(path, allow_pickle=False) as f:
                if "format" not in f or str(f["format"]) != _FORMAT:
                    raise ValueError(f"{path} is not a datacredit ProductQuantizer file")
                params = {k: f[k].item() for k in ("d", "m", "nbits", "seed", "nlist", "nprobe")}
                params["metric"] = str(f["metric"])
                cent = np.ascontiguousarray(f["centroids"], dtype=np.float32)
                coarse = np.ascontiguousarray(f["coarse_centroids"], np.float32)
        else:
            tensors, meta = load_safetensors(path, mmap=False)
            check_st_format(path, meta, _PQ_ST_FORMAT, "ProductQuantizer")
            params = {k: meta_int(path, meta, k) for k in ("d", "m", "nbits", "nlist", "nprobe")}
            seed = meta.get("seed", "")
            if not seed.lstrip("-").isdigit():
                raise ValueError(f"{path}: metadata 'seed' must be an integer, got {seed!r}")
            params["seed"] = int(seed)
            params["metric"] = meta.get("metric")
            cent = tensors.get("centroids")
            coarse = tensors.get("coarse_centroids")
            if cent is None or cent.dtype != np.float32:
                raise ValueError(f"{path}: float32 tensor 'centroids' missing")
            if params["nlist"] and (coarse is None or coarse.dtype != np.float32):
                raise ValueError(f"{path}: float32 tensor 'coarse_centroids' missing")
        pq = cls(
            int(params["d"]),
            int(params["m"]),
            int(params["nbits"]),
            metric=params["metric"],
            seed=int(params["seed"]),
            nlist=int(params["nlist"]) or None,
            nprobe=int(params["nprobe"]),
            n_threads=n_threads,
        )
        if cent.shape != (pq.m, pq.ksub, pq.dsub):
            raise ValueError(
                f"{path}: centroids have shape {cent.shape}, expected {(pq.m, pq.ksub, pq.dsub)}"
            )
        if pq.nlist is not None:
            if coarse.shape != (pq.nlist, pq.d):
                raise ValueError(
                    f"{path}: coarse centroids have shape {coarse.shape}, "
                    f"expected {(pq.nlist, pq.d)}"
                )
            pq.coarse_centroids = coarse
        pq.centroids = cent
        return pq

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        return (
            f"ProductQuantizer(d={self.d}, m={self.m}, nbits={self.nbits}, "
            f"metric={self.metric!r}, nlist={self.nlist}, nprobe={self.nprobe}, "
            f"seed={self.seed}, {state})"
        )
