"""DualDA with features on disk (issue 25): streamed from a lazy Dataset into memory-mapped
files, resumable after an interruption, identical to the in-memory fit; bad files refit."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from datacredit import DualDA  # noqa: E402


class MLP(nn.Module):
    def __init__(self, d_in=6, hidden=12, k=4):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, k)

    def forward(self, x):
        return self.fc(self.body(x))


class LazyBlobs(torch.utils.data.Dataset):
    """Items made on access from their index (nothing held in memory); can fail at the
    ``fail_at_call``-th access (the first pass over the data keys the cache)."""

    def __init__(self, n: int, fail_at_call: int | None = None) -> None:
        self.n, self.fail_at_call, self.calls = n, fail_at_call, 0
        self.centers = torch.randn(4, 6, generator=torch.Generator().manual_seed(1)) * 2.0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.calls += 1
        if self.calls == self.fail_at_call:
            raise RuntimeError("interrupted")
        g = torch.Generator().manual_seed(int(i))
        y = int(torch.randint(0, 4, (1,), generator=g))
        return self.centers[y] + torch.randn(6, generator=g), y


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MLP().eval()


def test_on_disk_fit_equals_in_memory_and_resumes(model, tmp_path):
    n = 800
    ref = DualDA(model, LazyBlobs(n), layer="fc", C=0.1, batch_size=4, progress=False).fit()
    broken = LazyBlobs(n, fail_at_call=n + 600)  # during the extraction pass
    with pytest.raises(RuntimeError, match="interrupted"):
        DualDA(model, broken, layer="fc", C=0.1, batch_size=4, cache_dir=tmp_path).fit()
    partial = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and (partial[0] / "progress.json").exists()
    # 64 batches of 4 rows are recorded at a time: the resumed run starts at row 512
    data = LazyBlobs(n)
    dd = DualDA(model, data, layer="fc", C=0.1, batch_size=4, cache_dir=tmp_path).fit()
    assert data.calls == n + (n - 512)  # one pass to key the cache, the rest to extract
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    feats = np.load(next(tmp_path.glob("features-*")) / "features.npy", mmap_mode="r")
    ref_feats, _, _ = ref.extract(LazyBlobs(n))
    np.testing.assert_array_equal(feats, ref_feats)
    np.testing.assert_array_equal(dd.support, ref.support)
    np.testing.assert_array_equal(dd.support_dual.values, ref.support_dual.values)
    np.testing.assert_array_equal(dd.coef, ref.coef)
    q = torch.randn(5, 6, generator=torch.Generator().manual_seed(9))
    a, b = dd.attribute(q, top_k=7), ref.attribute(q, top_k=7)
    np.testing.assert_array_equal(a[1], b[1])


def test_on_disk_features_of_wrong_dtype_are_extracted_again(model, tmp_path):
    n = 400
    DualDA(model, LazyBlobs(n), layer="fc", C=0.1, batch_size=16, cache_dir=tmp_path).fit()
    fdir = next(tmp_path.glob("features-*"))
    good = np.load(fdir / "features.npy")
    np.save(fdir / "features.npy", good.astype(np.float64))
    for cache in tmp_path.glob("dualda-*.npz"):
        cache.unlink()  # force a refit that reads the features
    with pytest.warns(RuntimeWarning, match="extracted again"):
        dd = DualDA(model, LazyBlobs(n), layer="fc", C=0.1, batch_size=16, cache_dir=tmp_path)
        dd.fit()
    again = np.load(fdir / "features.npy", mmap_mode="r")
    assert again.dtype == np.float32
    np.testing.assert_array_equal(again, good)


def test_cache_of_another_model_is_never_read(model, tmp_path):
    """A cache (fit or on-disk features) of another model is never used: a different model
    keys different files, and another model's files copied under this model's names are
    refitted / re-extracted with a warning (the result is this model's fresh fit)."""
    n = 300
    kw = dict(layer="fc", C=0.1, batch_size=16, progress=False)
    torch.manual_seed(5)
    other = MLP().eval()
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    DualDA(model, LazyBlobs(n), cache_dir=a_dir, **kw).fit()
    fresh = DualDA(other, LazyBlobs(n), **kw).fit()
    # the same cache directory: the other model's key names other files
    b = DualDA(other, LazyBlobs(n), cache_dir=a_dir, **kw).fit()
    assert not b.loaded_from_cache
    np.testing.assert_array_equal(b.coef, fresh.coef)
    # model A's files renamed to model B's names (a copied cache directory)
    b_dir.mkdir()
    dd_b = DualDA(other, LazyBlobs(n), cache_dir=b_dir, **kw)
    key = dd_b._cache_key()
    a_key = DualDA(model, LazyBlobs(n), cache_dir=a_dir, **kw)._cache_key()
    (b_dir / f"dualda-{key[:40]}.npz").write_bytes(
        (a_dir / f"dualda-{a_key[:40]}.npz").read_bytes()
    )
    import shutil

    shutil.copytree(a_dir / f"features-{a_key[:40]}", b_dir / f"features-{key[:40]}")
    with pytest.warns(RuntimeWarning) as record:
        dd_b.fit()
    messages = " | ".join(str(w.message) for w in record)
    assert "another model" in messages and "extracted for another model" in messages, messages
    assert not dd_b.loaded_from_cache
    np.testing.assert_array_equal(dd_b.coef, fresh.coef)
    np.testing.assert_array_equal(dd_b.support, fresh.support)
    feats = np.load(b_dir / f"features-{key[:40]}" / "features.npy")
    np.testing.assert_array_equal(feats, fresh.extract(LazyBlobs(n))[0])
    # and the rewritten cache is now B's own: read back without a warning
    again = DualDA(other, LazyBlobs(n), cache_dir=b_dir, **kw).fit()
    assert again.loaded_from_cache
