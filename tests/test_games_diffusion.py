"""The retraining game of a contributor-conditioned diffusion model (games/diffusion.py):
a 3-contributor toy with a few training steps (seconds on one thread)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("pytorch_msssim")
torch = pytest.importorskip("torch")

from datacredit.games.diffusion import (  # noqa: E402
    SAMPLE_METRICS,
    DiffusionRecipe,
    DiffusionRetrainingGame,
    paired_ssim,
)
from datacredit.surrogateshap.utilities import FID, InceptionScore  # noqa: E402

RECIPE = DiffusionRecipe(
    steps=3, batch_size=8, channels=(8, 16), ddim_steps=2, n_per_label=4, finetune_steps=2
)


def _data():
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.flatnonzero(d.target < 3)[:36]
    x = (d.images[keep] / 16.0).astype(np.float32)[:, None]
    return x, d.target[keep].astype(np.int64)


def _probs(a):
    # a fixed "classifier": softmax of three pixel-mass features (no training needed)
    f = np.asarray(a, np.float64).reshape(len(a), -1)
    z = np.stack([f[:, :21].sum(1), f[:, 21:42].sum(1), f[:, 42:].sum(1)], 1)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _utilities(x):
    flat = lambda a: np.asarray(a, np.float64).reshape(len(a), -1)[:, ::8]  # noqa: E731
    # the plug-in IS: test_utilities_match_an_independent_mixture computes it by hand
    return {"fid": FID(flat, flat(x)), "is": InceptionScore(_probs, estimator="plugin")}


def _game(tmp_path=None, **kw):
    x, y = _data()
    torch.set_num_threads(1)
    return DiffusionRetrainingGame(x, y, _utilities(x), RECIPE, cache_dir=tmp_path, **kw)


def test_cache_hit_resume_and_atomic_files(tmp_path):
    g = _game(tmp_path)
    Z = np.array([[1, 0, 1], [0, 1, 0]], bool)
    assert not g.is_cached(Z).any()
    first = g.run(Z)
    assert g.is_cached(Z).all() and not g.is_cached(Z, seed=1).any()
    assert g.run(Z[:0]).shape == (0, first.shape[1])
    assert first.shape == (2, 2 + len(SAMPLE_METRICS))
    assert g.harness.n_trained == 2
    again = g.run(Z)
    assert g.harness.n_trained == 2  # both read from the cache
    np.testing.assert_array_equal(first, again)
    # a new game on the same cache (a resumed run) trains nothing, full model included
    g2 = _game(tmp_path)
    np.testing.assert_array_equal(g2.run(Z), first)
    assert g2.harness.n_trained == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert not [f for f in files if f.startswith(".") or f.endswith(".tmp")], files
    assert sum(f.startswith("retrain-") for f in files) == 2
    assert any(f.startswith("full-model-") and f.endswith(".safetensors") for f in files)
    # a corrupt cache file is retrained, not trusted
    for p in tmp_path.glob("retrain-*.npy"):
        p.write_bytes(b"garbage")
    g3 = _game(tmp_path)
    np.testing.assert_allclose(g3.run(Z)[:, :4], first[:, :4], rtol=0, atol=0)
    assert g3.harness.n_trained == 2


def test_other_seed_is_another_cache_entry(tmp_path):
    g = _game(tmp_path)
    Z = np.array([[1, 1, 0]], bool)
    a, b = g.run(Z, seed=0), g.run(Z, seed=1)
    assert g.harness.n_trained == 2
    assert not np.array_equal(a[:, :2], b[:, :2])


def test_full_coalition_retrained_with_same_seed_reproduces_the_proxy():
    g = _game()
    bank = g.bank_samples()
    # a fresh training run on every contributor (bypassing the cache and the full model)
    row = g.retrain([0, 1, 2])
    assert row[2] == 0.0  # paired MAE: the very same samples
    assert row[3] == pytest.approx(1.0, abs=1e-6)  # SSIM
    full = np.ones((1, 3), bool)
    for k, name in enumerate(g.utility_names):
        assert row[k] == pytest.approx(g.proxy_game(name)(full)[0], rel=1e-9)
    assert bank.shape == (3, RECIPE.n_per_label, 1, 8, 8)
    assert bank.min() >= 0 and bank.max() <= 1


def test_utilities_match_an_independent_mixture():
    # the retrained utility of a coalition = the utility of its samples mixed by image counts
    g = _game()
    Z = np.array([[1, 0, 1]], bool)
    row = g.run(Z)[0]
    _, y = _data()
    counts = np.bincount(y)[[0, 2]]
    # IS by hand: exp(E KL(p(y|x) || p̄)) over the count-weighted mixture of the two labels
    import copy

    from datacredit.surrogateshap import SampleBank

    x, _ = _data()
    torch.manual_seed(0)
    members, unet, _ = g._train(np.array([0, 2]), 0)
    s = g.sample(unet, [0, 2])
    p = [_probs(s[0]), _probs(s[1])]
    w = counts / counts.sum()
    pbar = w[0] * p[0].mean(0) + w[1] * p[1].mean(0)
    h = [np.mean(np.sum(q * np.log(q), 1)) for q in p]
    is_ref = np.exp(w[0] * h[0] + w[1] * h[1] - np.sum(pbar * np.log(pbar)))
    assert row[1] == pytest.approx(is_ref, rel=1e-9)
    fid = copy.copy(_utilities(x)["fid"]).prepare(SampleBank({0: s[0], 2: s[1]}))
    assert row[0] == pytest.approx(fid.evaluate(w[None])[0], rel=1e-9)


def test_finetune_mode_starts_from_the_full_model(tmp_path):
    g = _game(tmp_path, mode="finetune")
    row = g.run(np.array([[1, 1, 0]], bool))[0]
    assert np.isfinite(row).all()
    assert (tmp_path / f"full-model-{g._data_key}.safetensors").exists()


def test_utility_game_and_empty_value():
    g = _game()
    game = g.utility_game("is")
    v = game(np.array([[0, 0, 0], [1, 0, 0]], bool))
    assert v[0] == g.empty_values()["is"]
    assert v[1] == pytest.approx(g.run(np.array([[1, 0, 0]], bool))[0, 1])


def test_inputs_are_not_modified_and_bad_input_errors():
    x, y = _data()
    x0, y0 = x.copy(), y.copy()
    u = _utilities(x)
    g = DiffusionRetrainingGame(x, y, u, RECIPE)
    g.run(np.array([[1, 0, 0]], bool))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    with pytest.raises(ValueError, match="images"):
        DiffusionRetrainingGame(x[:, 0], y, u, RECIPE)
    with pytest.raises(ValueError, match="lie in"):
        DiffusionRetrainingGame(x * 2, y, u, RECIPE)
    with pytest.raises(ValueError, match="owner"):
        DiffusionRetrainingGame(x, y[:-1], u, RECIPE)
    with pytest.raises(ValueError, match="without images"):
        DiffusionRetrainingGame(x, np.where(y == 1, 2, y), u, RECIPE)
    with pytest.raises(ValueError, match="utilities"):
        DiffusionRetrainingGame(x, y, {}, RECIPE)
    with pytest.raises(TypeError, match="prepare"):
        DiffusionRetrainingGame(x, y, {"fid": object()}, RECIPE)
    with pytest.raises(ValueError, match="mode"):
        DiffusionRetrainingGame(x, y, u, RECIPE, mode="lora")
    with pytest.raises(ValueError, match="steps"):
        DiffusionRecipe(steps=0)
    with pytest.raises(ValueError, match="n_per_label"):
        DiffusionRecipe(n_per_label=2)
    with pytest.raises(ValueError, match="empty coalition"):
        g.run(np.array([[0, 0, 0]], bool))
    with pytest.raises(ValueError, match="shape"):
        g.run(np.ones((1, 4), bool))
    with pytest.raises(ValueError, match="name"):
        g.proxy_game("lpips")


def test_paired_ssim_against_the_definition():
    # uniform window of the whole image (win_size = H): SSIM of two constant images is the
    # luminance term (2 μa μb + C1) / (μa² + μb² + C1)
    a = np.full((2, 1, 8, 8), 0.2, np.float32)
    b = np.full((2, 1, 8, 8), 0.6, np.float32)
    c1 = 0.01**2
    ref = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    np.testing.assert_allclose(paired_ssim(a, b), ref, rtol=1e-5)
    np.testing.assert_allclose(paired_ssim(a, a), 1.0, rtol=1e-6)


def test_cache_key_covers_the_utilities_settings(tmp_path):
    """Results cached with the plug-in IS are not read back for the bias-corrected one."""
    x, y = _data()
    flat = lambda a: np.asarray(a, np.float64).reshape(len(a), -1)[:, ::8]  # noqa: E731
    keys = set()
    for est in ("plugin", "split"):
        u = {"fid": FID(flat, flat(x)), "is": InceptionScore(_probs, estimator=est)}
        keys.add(DiffusionRetrainingGame(x, y, u, RECIPE, cache_dir=tmp_path)._data_key)
    assert len(keys) == 2
