"""GMValuator (Yang et al.): training-data values for a generative model by similarity
matching of generated samples to training samples, calibrated by image quality.

Pipeline (paper §3, Algorithm 1):

1. ``fit``: embed the training set once (encoder), build the recall index
   (our product quantizer, exact Gram top-k, or faiss).
2. ``value``: embed the generated samples; per generated sample j, *recall* ``recall``
   candidates from the index; *re-rank* them with the chosen distance d_ij (exact
   Euclidean / cosine in embedding space, or LPIPS / DreamSim / any callable in image
   space); keep the top k; weight by the quality q_j; contributions
   ``q_j * softmax(-d_ij / T)`` over the k kept (eq. 6, max-subtracted so large
   distances never underflow to 0/0); sum per training sample (eq. 5).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from datacredit._arrays import as_float_matrix, check_choice, check_int
from datacredit._scratch import scratch_array
from datacredit.gmvaluator import stages
from datacredit.gmvaluator.calibration import (
    CALIBRATION_QUERIES,
    Calibration,
    apply_calibration,
    calibrate_ivf,
    calibrate_pq,
    calibration_rows,
    check_target_recall,
    diagnostic_rows,
    search_diagnostics,
)
from datacredit.gmvaluator.contributions import softmax_weights
from datacredit.gmvaluator.embedding_cache import cached, read_cache, write_cache
from datacredit.gmvaluator.result import GMValuation
from datacredit.gmvaluator.search import (
    AUTO_IVF_MIN_TRAIN,
    CENTRE_MIN_OFFSET_RATIO,
    INDEXES,
    candidate_distances,
    default_pq_m,
    pq_settings,
)
from datacredit.kernels import (
    ProductQuantizer,
    build_inverted_lists,
    gram_topk,
    ivf_exact_topk,
    ivf_flat_search,
    kmeans,
)
from datacredit.models._data import data_len, take
from datacredit.models.encoders import make_encoder
from datacredit.models.fingerprint import fingerprint_data, fingerprint_model
from datacredit.models.scorers import IMAGE_DISTANCES, make_distance, make_quality

EMBEDDING_RERANKS = ("l2", "cosine")
DEFAULT_RECALL = 200
RERANKS = (*EMBEDDING_RERANKS, *IMAGE_DISTANCES)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class GMValuator:
    """Values training samples by their similarity to generated samples.

    Args:
        encoder: how samples become embeddings (see :func:`datacredit.models.make_encoder`):
            ``None`` (inputs are embeddings), ``"pixels"``, ``"open_clip[:MODEL/PRETRAINED]"``,
            a torch module, an object with ``.encode``, or a callable.
        k: training samples kept per generated sample.
        recall: candidates recalled per generated sample before re-ranking, ``>= k``.
            ``None`` (default): 200 (capped at the training set size), and for ``"pq"`` /
            ``"faiss"`` a starting point the recall calibration may raise; an integer pins it.
        index: ``"auto"`` (default: ``"exact"`` below 100,000 training samples, ``"ivf"``
            from there), ``"ivf"`` (inverted file with exact l2 inside the ``pq_nprobe``
            probed lists: the training samples are grouped by list once (indices only), each
            list is searched with the fused Gram top-k kernel for the generated samples
            probing it),
            ``"pq"`` (datacredit's product quantizer, 8 bits, with an optional coarse IVF:
            ADC candidates, so keep ``recall`` well above ``k``), ``"exact"`` (fused Gram
            top-k over everything) or ``"faiss"`` (faiss ``IndexPQ``).  The default is
            ``"auto"`` rather than ``"pq"`` because the re-rank keeps the raw embeddings in
            memory anyway, so PQ saves no memory here, and on 1M x 512 clustered embeddings
            ``"ivf"`` reached recall@50 1.000 where ``"pq"`` with ``recall=200`` reached 0.71
            (``benchmarks/bench_gmvaluator.py``).
        pq_m: PQ sub-spaces (default: about d/8, a divisor of d).
        pq_nlist: inverted lists of the coarse quantizer (``index="pq"`` or ``"ivf"``);
            ``None`` picks ``round(sqrt(N))`` (for ``"pq"`` only when N >= 100,000, no IVF
            below); 0 disables (``"pq"`` only).
        pq_nprobe: lists scanned per generated sample (default ``max(1, nlist // 16)``).
        rerank: how the ``recall`` candidates are re-ranked before the top k are kept:
            ``"l2"`` (default; Euclidean distance, not squared) or ``"cosine"`` (1 - cosine;
            the index then searches unit-norm embeddings, so the candidates are the cosine
            nearest), both recomputed exactly in float64 in embedding space: with the
            default ``index="auto"`` this is exact embedding-space k-NN.  In image space
            (needs the raw data, see :mod:`datacredit.models.images` for the image
            convention): ``"pixel_l2"`` (the paper's App. H l2 re-rank), ``"lpips"``,
            ``"dreamsim"`` (an embedding model: each image embedded once, training
            embeddings cached with the encoder's), or a callable
            ``fn(gen_batch, train_batch) -> (n,)`` called on at most ``batch_size`` pairs.
            ``None``: no re-rank (the paper's "No-Rerank"): the index's own distances;
            exact ones (float64) for ``"exact"`` / ``"ivf"``, quantized ones for ``"pq"`` /
            ``"faiss"``.  :meth:`paper` builds the paper's configuration.
        quality: ``None`` (q = 1), ``"maniqa"`` or a callable ``fn(images) -> (n,)`` in [0, 1].
        temperature: T of ``softmax(-d / T)``, > 0.
        device: torch device of the encoder and scorers.
        batch_size: samples per encoder / scorer batch, and image pairs per re-rank call.
        diagnostics_sample: generated samples on which an approximate index is checked
            against exact search (recall@k in ``GMValuation.diagnostics``, on samples held
            out from the calibration when the batch is large enough); 0 disables.
        target_recall: recall@k against exact search that the approximate indexes must
            reach, in (0, 1] (default 0.95); ``None`` turns the calibration off.  The first
            ``value`` call after ``fit`` calibrates on ``calibration_queries`` of its
            generated samples (:mod:`datacredit.gmvaluator.calibration`), later calls reuse
            that setting (``diagnostics["calibration_reused"]``) until a held-out check of
            theirs falls short or a setting changes: ``"ivf"`` picks the smallest
            nprobe reaching the target, ``"pq"`` the smallest nprobe and ``recall``;
            ``"auto"`` searches exactly when the inverted file would scan more than exact
            search costs (``diagnostics["auto_fallback"]`` says so); a pinned ``pq_nprobe``
            (or ``recall`` for ``"pq"``) that misses the target raises a ``UserWarning``
            naming the measured recall and the setting that reaches it (on every call).
            Cost: an exact search of the calibration queries, done in one pass with the
            diagnostics rows, once per fit (docs/gmvaluator.md has the figures).
        calibration_queries: generated samples of the first ``value`` call used to
            calibrate (a batch with fewer is calibrated on all its rows, and not reused).
        seed: PQ training seed.
        n_threads: threads of the kernels (``None``: all cores).
        progress: show progress bars (tqdm) while embedding.

    Complexity of ``value``: ``"exact"`` ``O(n_gen * N * d)`` (GEMM tiles, fused top-k);
    ``"ivf"`` ``O(n_gen * (nlist + nprobe * N / nlist) * d)`` for balanced lists;
    ``"pq"`` ``O(n_gen * N * m)`` table look-ups (most abandoned early); plus
    ``O(n_gen * recall * d)`` for the exact re-rank.  Memory beyond the embeddings:
    ``O(n_gen * recall)`` (``"ivf"``: ``N`` list positions and one list's embeddings;
    ``"pq"``: ``N * m`` bytes of codes), plus one float32 copy of the training embeddings
    (``N * d * 4`` bytes) when the index must search them centred (far from the origin) or
    unit-normalised (``rerank="cosine"`` on embeddings that are not unit-norm).
    """

    def __init__(
        self,
        *,
        encoder: Any = None,
        k: int = 50,
        recall: int | None = None,
        index: str = "auto",
        pq_m: int | None = None,
        pq_nlist: int | None = None,
        pq_nprobe: int | None = None,
        rerank: Any = "l2",
        quality: Any = None,
        temperature: float = 1.0,
        device: str = "cpu",
        batch_size: int = 256,
        diagnostics_sample: int = 100,
        target_recall: float | None = 0.95,
        calibration_queries: int = CALIBRATION_QUERIES,
        seed: int = 0,
        n_threads: int | None = None,
        progress: bool = False,
    ) -> None:
        self.k = _positive_int(k, "k")
        # recall=None: 200 to start with; index="pq"/"faiss" may raise it to meet the target
        self._recall_pinned = recall is not None
        self.recall = DEFAULT_RECALL if recall is None else _positive_int(recall, "recall")
        if not self._recall_pinned:
            self.recall = max(self.recall, self.k)
        self._recall_default = self.recall
        self.target_recall = check_target_recall(target_recall)
        self.calibration_queries = _positive_int(calibration_queries, "calibration_queries")
        if self.k > self.recall:
            raise ValueError(f"k = {self.k} must not exceed recall = {self.recall}")
        self.index = check_choice(index, "index", INDEXES)
        self.pq_m = None if pq_m is None else _positive_int(pq_m, "pq_m")
        self.pq_nlist = None if pq_nlist in (None, 0) else _positive_int(pq_nlist, "pq_nlist")
        self._auto_nlist = pq_nlist is None
        self.pq_nprobe = None if pq_nprobe is None else _positive_int(pq_nprobe, "pq_nprobe")
        if not (
            isinstance(temperature, (int, float))
            and not isinstance(temperature, bool)
            and np.isfinite(temperature)
        ) or (temperature <= 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)
        self.device = device
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.diagnostics_sample = check_int(diagnostics_sample, "diagnostics_sample", 0)
        # negative seeds are numpy's to refuse where they are used (PQ / k-means)
        self.seed = check_int(seed, "seed")
        self.n_threads = n_threads
        self.progress = progress
        self.encoder = make_encoder(encoder, device=device, batch_size=self.batch_size)
        if rerank is None or (isinstance(rerank, str) and rerank in EMBEDDING_RERANKS):
            self.rerank = rerank
            self._distance = None
        else:
            if isinstance(rerank, str) and rerank not in RERANKS:
                raise ValueError(
                    f"unknown rerank {rerank!r}; expected None, one of {RERANKS} "
                    "or a callable fn(generated, train) -> (n,)"
                )
            self.rerank = rerank if isinstance(rerank, str) else "callable"
            self._distance = make_distance(rerank, device=device)
        self._quality = make_quality(quality, device=device)
        self.train_embeddings: np.ndarray | None = None
        self.index_: str | None = None  # the index in use after fit ("auto" resolved)
        self._train_data: Any = None
        self._pq: ProductQuantizer | None = None
        self._codes: np.ndarray | None = None
        self._lists: np.ndarray | None = None
        self._faiss: Any = None
        self._search_emb: np.ndarray | None = None  # what the index searches (see fit)
        self._search_shift: np.ndarray | None = None
        self._rerank_train_emb: np.ndarray | None = None  # DreamSim-like re-rank embeddings

    @classmethod
    def paper(
        cls,
        *,
        encoder: Any = "open_clip",
        rerank: Any = "dreamsim",
        quality: Any = "maniqa",
        k: int = 50,
        recall: int | None = None,
        index: str = "pq",
        **kwargs: Any,
    ) -> GMValuator:
        """The paper's configuration (§3, Algorithm 1) in one line.

        Encoder embeddings (CLIP in the paper) -> product-quantization recall -> re-rank of
        the candidates in image space (``"dreamsim"``, ``"lpips"`` or ``"pixel_l2"``, the
        paper's App. H l2; ``None`` is its "No-Rerank") -> MANIQA quality weights.  This
        differs from the constructor's defaults, which re-rank by exact l2 in embedding
        space and so amount to exact embedding-space k-NN.  ``recall`` defaults to
        ``max(200, 4 * k)``; other keyword arguments go to the constructor.  Example::

            GMValuator.paper(encoder=clip, rerank="lpips", quality="maniqa")
            GMValuator.paper(encoder=cnn_features, rerank="pixel_l2", quality=None)
        """
        k = _positive_int(k, "k")
        gmv = cls(
            encoder=encoder,
            k=k,
            recall=recall,
            index=index,
            rerank=rerank,
            quality=quality,
            **kwargs,
        )
        if recall is None:  # a starting point: the calibration may raise it
            gmv.recall = gmv._recall_default = max(DEFAULT_RECALL, 4 * k)
        return gmv

    # ------------------------------------------------------------------ fit
    def check_train_rows(self, n: int) -> None:
        """Raises when ``n`` training samples cannot serve ``k`` / ``recall``; an unpinned
        ``recall`` (the default) is capped at ``n``."""
        if self.k > n:
            raise ValueError(
                f"k = {self.k} exceeds the number of training samples {n} (recall@k, and its "
                "calibration, need at least k rows)"
            )
        if not self._recall_pinned:
            self.recall = max(self.k, min(self._recall_default, n))
        if self.recall > n:
            raise ValueError(f"recall = {self.recall} exceeds the number of training samples {n}")

    def fit(
        self,
        train_data: Any,
        *,
        cache: str | os.PathLike | None = None,
        store: str | os.PathLike | None = None,
        executor: Any = None,
        shard_rows: int | None = None,
    ) -> GMValuator:
        """Embed the training set (in its own, stable order) and build the index.

        Args:
            train_data: training samples (array, tensor, sequence or dataset), or their
                embeddings ``(N, d)`` when ``encoder=None``.
            cache: optional file path (used exactly as given): the embeddings (and those
                of an embedding re-rank model such as DreamSim) are read from it when they
                were computed from the same data (content fingerprint) by the same model
                (weights and code fingerprint), otherwise computed and written there
                atomically (a file that is not a GMValuator cache raises).
            store: optional directory: out of core (``datacredit.gmvaluator.
                stages``): the embeddings are written shard by shard into a
                ``ShardStore`` there (resumable; skipped when complete for the same
                configuration) and used memory-mapped; the index is built shard by shard.
                ``index`` must be ``"auto"``, ``"ivf"``, ``"pq"`` or ``"exact"``.
            executor: with ``store``: runs the shards (``None`` serial, a
                ``concurrent.futures.Executor`` or ``datacredit.distributed.RayExecutor``);
                also used by ``value``. Results do not depend on it.
            shard_rows: with ``store``: training rows per shard (default 262,144).

        Returns ``self``.
        """
        if store is not None:
            if cache is not None:
                raise ValueError("pass either cache= or store=, not both")
            return stages.fit_out_of_core(
                self, train_data, store, executor=executor, shard_rows=shard_rows
            )
        if executor is not None or shard_rows is not None:
            raise ValueError("executor= and shard_rows= need store=")
        self._store = None
        n = data_len(train_data, "train_data")
        if n == 0:
            raise ValueError("train_data is empty")
        t0 = time.perf_counter()
        entries: dict[str, Any] = {}
        data_fp = ""
        if cache is not None:
            entries = read_cache(cache)
            data_fp = fingerprint_data(train_data, "train_data")
        to_write: dict[str, tuple[np.ndarray, str, str]] = {}
        emb = None
        if cache is not None:
            enc_fp = fingerprint_model(self.encoder)
            emb = cached(entries, "embeddings", data_fp, enc_fp, n)
        if emb is None:
            emb = as_float_matrix(
                self.encoder.encode(
                    train_data, progress=self.progress and "embedding training set"
                ),
                "training embeddings",
            )
            if cache is not None:
                to_write["embeddings"] = (emb, data_fp, enc_fp)
        if emb.shape[0] != n:
            raise ValueError(f"the encoder returned {emb.shape[0]} rows for {n} training samples")
        self.check_train_rows(n)
        self._rerank_train_emb = None
        if self._embeds_for_rerank():
            # DreamSim-like re-ranks: every training image embedded once, cached alongside.
            rr = None
            if cache is not None:
                rr_fp = fingerprint_model(self._distance)
                rr = cached(entries, "rerank_embeddings", data_fp, rr_fp, n)
            if rr is None:
                rr = self._embed_for_rerank(train_data, n)
                if cache is not None:
                    to_write["rerank_embeddings"] = (rr, data_fp, rr_fp)
            self._rerank_train_emb = rr
        if to_write:
            keep = {
                name: (
                    entries[name],
                    str(entries[f"{name}_data_fingerprint"]),
                    str(entries[f"{name}_model_fingerprint"]),
                )
                for name in ("embeddings", "rerank_embeddings")
                if name in entries
                and name not in to_write
                and str(entries[f"{name}_data_fingerprint"]) == data_fp
            }
            write_cache(cache, {**keep, **to_write})
        t1 = time.perf_counter()
        self.train_embeddings = emb
        self._train_data = (
            train_data if self._distance is not None and self._rerank_train_emb is None else None
        )
        self._pq = self._codes = self._lists = self._faiss = self._ivf = None
        self._calibration_memo = None  # (settings key, Calibration) of this fit
        emb = self._search_emb = self._search_space(emb)
        d = emb.shape[1]
        self.index_ = self.index
        if self.index == "auto":
            self.index_ = "exact" if n < AUTO_IVF_MIN_TRAIN else "ivf"
        if self.index_ == "ivf":
            nlist = self.pq_nlist or max(1, int(round(np.sqrt(n))))
            if nlist > n:
                raise ValueError(f"pq_nlist = {nlist} exceeds the number of training samples {n}")
            nprobe = self.pq_nprobe or max(1, nlist // 16)
            if nprobe > nlist:
                raise ValueError(f"pq_nprobe = {nprobe} must not exceed pq_nlist = {nlist}")
            coarse = kmeans(emb, nlist, seed=self.seed)
            lists = gram_topk(emb, coarse, 1, metric="l2", largest=False, n_threads=self.n_threads)[
                1
            ][:, 0]
            # The search space grouped by list (a copy in list order, N * (d + 3) floats):
            # the kernel scans each list's rows contiguously with precomputed norms.
            self._ivf = {
                "coarse": coarse,
                # file-backed for a memory-mapped training set (datacredit._scratch)
                "inverted": build_inverted_lists(
                    emb, lists, nlist, out=scratch_array(emb.shape, np.float32, like=emb)
                ),
                "nprobe": nprobe,
                "lists": lists.astype(np.int32),
            }
        if self.index_ == "pq":
            m, nbits, nlist, nprobe = pq_settings(self, n, d)
            pq = ProductQuantizer(
                d,
                m,
                nbits,
                nlist=nlist,
                nprobe=nprobe,
                seed=self.seed,
                n_threads=self.n_threads,
            )
            pq.train(emb)
            self._pq, self._codes = pq, pq.encode(emb)
            if nlist is not None:
                self._lists = pq.assign(emb)
        elif self.index_ == "faiss":
            try:
                import faiss
            except ImportError as exc:
                raise ImportError("index='faiss' needs faiss: pip install faiss-cpu") from exc
            m = self.pq_m or default_pq_m(d)
            idx = faiss.IndexPQ(d, m, int(min(8, np.floor(np.log2(n)))))
            idx.train(emb)
            idx.add(emb)
            self._faiss = idx
        self._fit_times = {"embed_train_s": t1 - t0, "build_index_s": time.perf_counter() - t1}
        return self

    # ------------------------------------------------------------------ value
    def _recall(
        self, gen: np.ndarray, r: int, nprobe: int | None, index: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates (n_gen, r) and their squared l2 distances from ``index`` (the fitted
        one, or ``"exact"``) probing ``nprobe`` lists, for ``gen`` already mapped to the
        search space (:meth:`_to_search_space`)."""
        emb = self._search_emb
        if index == "exact":
            dist, idx = gram_topk(gen, emb, r, metric="l2", largest=False, n_threads=self.n_threads)
        elif index == "ivf":
            dist, idx = self._ivf_search(gen, r, nprobe)
        elif index == "pq":
            lists = self._lists
            dist, idx = self._pq.search(
                gen, self._codes, r, lists=lists, nprobe=nprobe if lists is not None else None
            )
            if self._lists is not None and (idx < 0).any():
                # Probed lists held fewer than `recall` codes: fill the empty slots with
                # exact candidates of the missing rows (rare; keeps shapes rectangular).
                rows = np.flatnonzero((idx < 0).any(1))
                d2, i2 = gram_topk(
                    gen[rows],
                    emb,
                    r,
                    metric="l2",
                    largest=False,
                    n_threads=self.n_threads,
                )
                dist[rows], idx[rows] = d2, i2
        else:
            dist, idx = self._faiss.search(gen, r)
        return dist, idx

    def _recall_except(
        self,
        gen: np.ndarray,
        rows: np.ndarray,
        known_dist: np.ndarray,
        known: np.ndarray,
        nprobe: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``"ivf"`` candidates ``(n_gen, k)`` of ``gen``, except that ``rows`` take the
        exact top k already known for them (``known_dist`` / ``known``, ``(len(rows), k)``)."""
        n_gen, k = gen.shape[0], self.k
        dist = np.empty((n_gen, k), np.float32)
        idx = np.empty((n_gen, k), np.int64)
        dist[rows], idx[rows] = known_dist[: len(rows)], known[: len(rows)]
        rest = np.setdiff1d(np.arange(n_gen), rows)
        if rest.size:
            dist[rest], idx[rest] = self._ivf_search(gen[rest], k, nprobe)
        return dist, idx

    def _ivf_search(
        self, gen: np.ndarray, r: int, nprobe: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``r`` (squared l2) inside each sample's ``nprobe`` probed lists."""
        ivf = self._ivf
        emb = self._search_emb
        _, probes = gram_topk(
            gen,
            ivf["coarse"],
            nprobe or ivf["nprobe"],
            metric="l2",
            largest=False,
            n_threads=self.n_threads,
        )
        # With a re-rank in the index's own metric (l2, none, or cosine on the unit-norm
        # search space) only the top k over the probed lists matters: k candidates (not
        # `recall`) are returned.
        exact_metric = self.rerank in ("l2", None, "cosine")
        r = self.k if exact_metric else r
        out_d, out_i = ivf_flat_search(gen, ivf["inverted"], probes, r, n_threads=self.n_threads)
        need = self.k if exact_metric else r
        missing = np.flatnonzero((out_i >= 0).sum(1) < need)
        if missing.size:  # probed lists held too few samples: exact fallback for those rows
            d2, i2 = gram_topk(
                gen[missing], emb, r, metric="l2", largest=False, n_threads=self.n_threads
            )
            out_d[missing], out_i[missing] = d2, i2
        return out_d, out_i

    def _embedding_distances(self, gen: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Exact distances (n_gen, recall) float64 between gen[j] and emb[cand[j]]."""
        emb = self.train_embeddings
        return candidate_distances(gen, cand, lambda idx: emb[idx], emb.shape[1], self.rerank)

    def _image_distances(self, generated: Any, cand: np.ndarray) -> np.ndarray:
        """Re-rank distances (n_gen, recall) float64 in image space, ``batch_size`` pairs
        per call of the distance model."""
        out = np.empty(cand.size, np.float64)
        r = cand.shape[1]
        gen_rows = np.repeat(np.arange(cand.shape[0]), r)
        flat = cand.ravel()
        for s in range(0, flat.size, self.batch_size):
            e = min(flat.size, s + self.batch_size)
            gen_batch = take(generated, gen_rows[s:e])
            train_batch = take(self._train_data, flat[s:e])
            out[s:e] = self._distance(gen_batch, train_batch)
        return out.reshape(cand.shape)

    def _embeds_for_rerank(self) -> bool:
        """Whether the re-rank model is an embedding model (DreamSim): it then embeds every
        image once and compares embeddings."""
        return hasattr(self._distance, "embed") and hasattr(self._distance, "embedding_distance")

    def _embed_for_rerank(self, data: Any, n: int) -> np.ndarray:
        parts = [
            self._distance.embed(take(data, np.arange(s, min(n, s + self.batch_size))))
            for s in range(0, n, self.batch_size)
        ]
        return as_float_matrix(np.concatenate(parts), "re-rank embeddings")

    def _search_space(self, emb: np.ndarray) -> np.ndarray:
        """The training embeddings as the index searches them.

        ``rerank="cosine"``: unit-norm rows (l2 order = cosine order, so the candidates are
        the cosine nearest).  Otherwise the embeddings, shifted by their mean when they lie
        far from the origin (squared-l2 search in float32 then keeps its digits); the
        re-rank always measures the raw embeddings in float64.  Copies only when needed.
        """
        self._search_shift = None
        # row chunks of 16M values: no N x d temporary; derived copies of a memory-mapped
        # training set are file-backed (datacredit._scratch), not anonymous memory
        step = max(1, (1 << 24) // max(1, emb.shape[1]))
        if self.rerank == "cosine":
            norms = np.concatenate(
                [
                    np.linalg.norm(emb[s : s + step].astype(np.float64), axis=1)
                    for s in range(0, emb.shape[0], step)
                ]
            )
            if (norms == 0).any():
                raise ValueError(
                    f"rerank='cosine': training embedding {int(np.flatnonzero(norms == 0)[0])} "
                    "is zero, its cosine is undefined"
                )
            if np.abs(norms - 1).max() <= 1e-6:
                return emb
            out = scratch_array(emb.shape, np.float32, like=emb)
            for s in range(0, emb.shape[0], step):
                out[s : s + step] = emb[s : s + step] / norms[s : s + step, None]
            return out
        # Mean and mean squared deviation in float64, in row chunks.
        mean = emb.mean(axis=0, dtype=np.float64)
        spread = 0.0
        for s in range(0, emb.shape[0], step):
            c = emb[s : s + step].astype(np.float64) - mean
            spread += float(np.einsum("nd,nd->", c, c))
        spread /= emb.shape[0]
        if float(mean @ mean) <= CENTRE_MIN_OFFSET_RATIO * spread:
            return emb
        self._search_shift = mean
        out = scratch_array(emb.shape, emb.dtype, like=emb)
        for s in range(0, emb.shape[0], step):
            out[s : s + step] = emb[s : s + step].astype(np.float64) - mean
        return out

    def _to_search_space(self, gen: np.ndarray) -> np.ndarray:
        """Generated embeddings mapped like :meth:`_search_space` maps the training ones."""
        if self.rerank == "cosine":
            norms = np.linalg.norm(gen.astype(np.float64), axis=1)
            if (norms == 0).any():
                raise ValueError(
                    f"rerank='cosine': generated embedding {int(np.flatnonzero(norms == 0)[0])} "
                    "is zero, its cosine is undefined"
                )
            return (gen / norms[:, None]).astype(np.float32)
        if self._search_shift is None:
            return gen
        return (gen.astype(np.float64) - self._search_shift).astype(np.float32)

    def _quality_scores(self, generated: Any, n_gen: int, quality_scores: Any) -> np.ndarray:
        if quality_scores is not None:
            q = np.asarray(
                quality_scores.detach().cpu().numpy()
                if hasattr(quality_scores, "detach")
                else quality_scores,
                dtype=np.float64,
            )
            name = "quality_scores"
        elif self._quality is not None:
            parts = []
            for s in range(0, n_gen, self.batch_size):
                parts.append(
                    self._quality(take(generated, np.arange(s, min(n_gen, s + self.batch_size))))
                )
            q = np.concatenate(parts)
            name = "the quality model's scores"
        else:
            return np.ones(n_gen)
        if q.shape != (n_gen,):
            raise ValueError(f"{name} must have shape ({n_gen},), got {q.shape}")
        if not np.isfinite(q).all() or q.min() < 0 or q.max() > 1:
            bad = q[~(np.isfinite(q) & (q >= 0) & (q <= 1))][0]
            raise ValueError(f"{name} must lie in [0, 1], got {bad}")
        return q

    def value(
        self, generated: Any, *, quality_scores: Any = None, executor: Any = None
    ) -> GMValuation:
        """Values of the training samples for the ``generated`` samples.

        Args:
            generated: generated samples (or their embeddings ``(n_gen, d)`` with
                ``encoder=None``).
            quality_scores: optional precomputed ``q_j`` ``(n_gen,)`` in [0, 1], used
                instead of the quality model.
            executor: after ``fit(store=...)``: runs the search over training shards
                (default: the executor given to ``fit``). Results do not depend on it.

        Returns:
            A :class:`GMValuation`.
        """
        if getattr(self, "_store", None) is not None:
            return stages.value_out_of_core(self, generated, quality_scores, executor)
        if executor is not None:
            raise ValueError("executor= needs a GMValuator fitted with store=")
        if self.train_embeddings is None:
            raise RuntimeError("the GMValuator is not fitted: call .fit(train_data) first")
        n_gen = data_len(generated, "generated")
        if n_gen == 0:
            raise ValueError("generated is empty")
        t0 = time.perf_counter()
        gen = as_float_matrix(
            self.encoder.encode(generated, progress=self.progress and "embedding generated"),
            "generated embeddings",
        )
        if gen.shape[0] != n_gen:
            raise ValueError(
                f"the encoder returned {gen.shape[0]} rows for {n_gen} generated samples"
            )
        d = self.train_embeddings.shape[1]
        if gen.shape[1] != d:
            raise ValueError(
                f"generated embeddings have dimension {gen.shape[1]}, training embeddings {d}"
            )
        q = self._quality_scores(generated, n_gen, quality_scores)
        t1 = time.perf_counter()
        search = self._to_search_space(gen)
        cal, cal_rows = None, None
        index, r, nprobe = self.index_, self.recall, None
        diag_rows = np.zeros(0, np.int64)
        reused = self._reusable_calibration() if self.index_ != "exact" else None
        if self.index_ != "exact":
            if self.target_recall is not None and reused is None:
                cal_rows = calibration_rows(n_gen, self.calibration_queries)
            # A reused fallback to exact search needs no held-out check (recall 1).
            fallback = reused is not None and reused.fallback_exact is not None
            if self.diagnostics_sample > 0 and not fallback:
                diag_rows = diagnostic_rows(n_gen, self.diagnostics_sample, cal_rows)
        # One exact search serves the calibration and the held-out diagnostics.
        n_cal = 0 if cal_rows is None else len(cal_rows)
        exact_rows = np.concatenate([cal_rows if n_cal else diag_rows[:0], diag_rows])
        exact = exact_dist = None
        if len(exact_rows):
            if self.index_ == "ivf":  # through the lists: no per-call pass over the keys
                exact_dist, exact = ivf_exact_topk(
                    search[exact_rows],
                    self._search_emb,
                    self._ivf["inverted"],
                    self.k,
                    n_threads=self.n_threads,
                )
            else:
                exact_dist, exact = gram_topk(
                    search[exact_rows],
                    self._search_emb,
                    self.k,
                    metric="l2",
                    largest=False,
                    n_threads=self.n_threads,
                )
        if cal_rows is not None:
            cal = self._calibrate(search[cal_rows], exact[:n_cal])
            if n_cal == self.calibration_queries:  # a full sample: kept for later calls
                self._calibration_memo = (self._calibration_key(), cal)
        elif reused is not None:
            cal = reused
        if cal is not None:
            index, r, nprobe = self._apply_calibration(cal)
        t_cal = time.perf_counter()
        if n_cal and index == "ivf" and self.rerank in ("l2", None, "cosine"):
            # The calibration rows' exact top k are their answers (the inverted file
            # returns k candidates here): only the other rows are searched.
            rec_dist, raw_cand = self._recall_except(search, cal_rows, exact_dist, exact, nprobe)
        else:
            rec_dist, raw_cand = self._recall(search, r, nprobe, index)
        invalid = raw_cand < 0  # unused slots (index="ivf" with few candidates); never kept
        cand = np.where(invalid, 0, raw_cand) if invalid.any() else raw_cand
        t2 = time.perf_counter()
        if self.rerank is None and self.index_ in ("pq", "faiss"):
            # No re-rank: the quantizer's own (approximate) distances.
            dist = np.sqrt(np.maximum(rec_dist.astype(np.float64), 0.0))
        elif self._distance is None:
            # l2 / cosine, and no re-rank on an exact index: the exact distances of the
            # candidates, recomputed in float64 from the raw embeddings.
            dist = self._embedding_distances(gen, cand)
        elif self._rerank_train_emb is not None:
            gen_rr = self._embed_for_rerank(generated, n_gen)
            dist = self._distance.embedding_distance(
                gen_rr[:, None, :], self._rerank_train_emb[cand]
            )
        else:
            dist = self._image_distances(generated, cand)
        if invalid.any():
            dist = np.where(invalid, np.inf, dist)
        # Keep the k nearest after re-ranking; ties to the lower training index.
        order = np.lexsort((cand, dist), axis=-1)[:, : self.k] if dist.size else dist
        top_idx = np.take_along_axis(cand, order, 1)
        top_dist = np.take_along_axis(dist, order, 1)
        weights = softmax_weights(top_dist, self.temperature) * q[:, None]
        values = np.bincount(
            top_idx.ravel(), weights=weights.ravel(), minlength=self.train_embeddings.shape[0]
        )
        t3 = time.perf_counter()
        diag: dict[str, Any] = {
            "index": index,
            "rerank": self.rerank,
            "k": self.k,
            "recall": int(raw_cand.shape[1]),
            "n_train": int(self.train_embeddings.shape[0]),
            "n_generated": n_gen,
            "embed_generated_s": t1 - t0,
            "calibration_s": t_cal - t1,
            "recall_s": t2 - t_cal,
            "rerank_and_values_s": t3 - t2,
            **getattr(self, "_fit_times", {}),
        }
        if self._ivf is not None:
            diag["pq_nlist"] = self._ivf["inverted"].nlist
            diag["pq_nprobe"] = nprobe or self._ivf["nprobe"]
        if self._pq is not None:
            diag["pq_m"], diag["pq_nbits"] = self._pq.m, self._pq.nbits
            diag["pq_nlist"] = self._pq.nlist
            diag["pq_nprobe"] = nprobe or self._pq.nprobe
        if cal is not None:
            diag["calibration_reused"] = reused is not None
        diag.update(
            search_diagnostics(
                cal, index, exact, n_cal, diag_rows, raw_cand, top_idx, self.rerank, self.k
            )
        )
        if diag.get("held_out_below_target"):
            self._calibration_memo = None  # this batch differs: the next call recalibrates
        return GMValuation(values, top_idx, weights, top_dist, q, diag)

    # ------------------------------------------------------------ calibration
    def _calibration_key(self) -> tuple:
        """The settings a calibration depends on besides the fitted index."""
        return (
            self.target_recall,
            self.pq_nprobe,
            self.recall,
            self._recall_pinned,
            self.calibration_queries,
            self.k,
            self.index,
            self.rerank,
        )

    def _reusable_calibration(self) -> Calibration | None:
        """The calibration of an earlier ``value`` call of this fit, if its settings are
        unchanged (generated batches of one generator share their distribution, so the
        setting transfers; each call's held-out diagnostics rows check it)."""
        memo = getattr(self, "_calibration_memo", None)
        if memo is None or self.target_recall is None or memo[0] != self._calibration_key():
            return None
        return memo[1]

    def _calibrate(self, queries: np.ndarray, exact: np.ndarray) -> Calibration:
        """Search parameters meeting ``target_recall`` on ``queries`` (calibration rows of
        the generated batch, in the search space) whose exact top-k is ``exact``; see
        :mod:`.calibration`."""
        n = self._search_emb.shape[0]
        if self.index_ == "ivf":
            ivf = self._ivf
            return calibrate_ivf(
                queries,
                exact,
                ivf["coarse"],
                lambda idx: ivf["lists"][idx],
                ivf["inverted"].sizes,
                n,
                self.target_recall,
                self.pq_nprobe,
                self.index == "auto",
                self.n_threads,
            )
        nlist = self._pq.nlist if self._pq is not None else None
        return calibrate_pq(
            exact,
            lambda r, nprobe: self._recall(queries, r, nprobe, self.index_)[1],
            n,
            self.recall,
            self._recall_pinned,
            nlist,
            self._pq.nprobe if nlist else 1,
            self.pq_nprobe is not None,
            self.target_recall,
        )

    def _apply_calibration(self, cal: Calibration) -> tuple[str, int, int | None]:
        """(index, recall, nprobe) of this call after ``cal``; warns when a pinned (or the
        largest searched) setting misses the target."""
        return apply_calibration(self, cal)
