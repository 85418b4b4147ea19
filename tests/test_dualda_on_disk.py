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
