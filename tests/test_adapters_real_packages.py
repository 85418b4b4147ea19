"""DreamSim and MANIQA adapters against the real ``dreamsim`` and ``pyiqa`` packages.

No weights can be downloaded here, so each package builds its real architecture with
random weights through its own entry point (``dreamsim.dreamsim(...)`` from a checkpoint
directory written by the test; ``pyiqa.create_metric("maniqa", pretrained=False)`` with
timm's ViT left unpretrained).  Each test feeds our adapter images in the library's
convention (uint8 NHWC grayscale, float NCHW, PIL) and compares with the package called
the way its README documents (PIL image -> ``preprocess`` -> ``model``; an image file path
-> the pyiqa metric).  Conversions are exact for 8-bit content, so the tolerances are
float32 round-off of the networks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from datacredit import GMValuator  # noqa: E402
from datacredit.models import DreamSimDistance, MANIQAScorer, PixelEncoder  # noqa: E402
from datacredit.models.scorers.dreamsim import dreamsim_transform as _dreamsim_transform  # noqa: E402


def _write_dreamsim_checkpoints(cache, *, lora_weights: bool) -> None:
    """DreamSim's ``open_clip_vitb32`` checkpoint layout with random weights: the ViT-B/32
    backbone as dreamsim stores it (``open_clip_vitb32_pretrain.pth.tar``) and the LoRA
    adapter directory (config; with ``lora_weights`` also its zero-initialised weights,
    saved by peft, so ``pretrained=True`` loads them)."""
    from dreamsim.feature_extraction.vision_transformer import vit_base

    torch.manual_seed(0)
    vit = vit_base(patch_size=32)
    vit.pos_drop = torch.nn.LayerNorm(vit.embed_dim)
    state = dict(vit.state_dict())
    state["proj"] = torch.randn(vit.embed_dim, 512) / vit.embed_dim**0.5
    cache.mkdir(parents=True, exist_ok=True)
    # dreamsim reads its checkpoints with torch.load(weights_only=True); this is its format.
    torch.save({"state_dict": state}, cache / "open_clip_vitb32_pretrain.pth.tar")
    lora_dir = cache / "open_clip_vitb32_single_lora"
    lora_dir.mkdir()
    config = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "bias": "none"}
    config["target_modules"] = ["qkv"]
    (lora_dir / "adapter_config.json").write_text(json.dumps(config))
    if lora_weights:
        from dreamsim import dreamsim

        model, _ = dreamsim(
            pretrained=False, device="cpu", cache_dir=str(cache), dreamsim_type="open_clip_vitb32"
        )
        model.save_pretrained(str(lora_dir))


@pytest.fixture(scope="module")
def real_dreamsim(tmp_path_factory):
    pytest.importorskip("dreamsim")
    from dreamsim import dreamsim

    cache = tmp_path_factory.mktemp("dreamsim")
    _write_dreamsim_checkpoints(cache, lora_weights=False)
    model, preprocess = dreamsim(
        pretrained=False, device="cpu", cache_dir=str(cache), dreamsim_type="open_clip_vitb32"
    )
    return model, preprocess


def _digits(rng, n, size=28):
    """``n`` uint8 grayscale (n, size, size) images with stroke-like structure."""
    img = np.zeros((n, size, size), np.float64)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
        img[i] = np.exp(-(((np.hypot(xx - cx, yy - cy) - r) / 0.05) ** 2))
    img += 0.1 * rng.random(img.shape)
    return np.round(255 * np.clip(img, 0, 1)).astype(np.uint8)


def test_our_dreamsim_transform_is_dreamsims_preprocess(real_dreamsim, rng):
    _, preprocess = real_dreamsim
    ours = _dreamsim_transform()
    for arr in (_digits(rng, 1)[0], (rng.random((40, 30, 3)) * 255).astype(np.uint8)):
        pil = Image.fromarray(arr)
        torch.testing.assert_close(ours(pil), preprocess(pil), rtol=0, atol=0)


def test_dreamsim_distance_matches_the_package(real_dreamsim, rng):
    """Our distance on library-convention inputs == ``model(preprocess(a), preprocess(b))``
    (dreamsim's README), and the embeddings == ``model.embed(preprocess(img))``."""
    model, preprocess = real_dreamsim
    a, b = _digits(rng, 3), _digits(rng, 3)
    with torch.no_grad():
        ref = torch.cat(
            [
                model(preprocess(Image.fromarray(x)), preprocess(Image.fromarray(y)))
                for x, y in zip(a, b)
            ]
        )
        ref_emb = torch.cat([model.embed(preprocess(Image.fromarray(x))) for x in a])
    ref = ref.double().numpy()
    dist = DreamSimDistance(model=model, preprocess=preprocess, batch_size=2)
    nchw_float = torch.from_numpy(b[:, None].astype(np.float32) / 255)  # exact 8-bit content
    nhwc_u8 = a[..., None]
    rgb_u8 = np.repeat(a[:, None], 3, axis=1)  # (N, 3, H, W) grayscale as RGB
    for x, y in (
        (a, b),
        (nhwc_u8, nchw_float),
        ([Image.fromarray(i) for i in a], [Image.fromarray(i) for i in b]),
        (rgb_u8, b),
    ):
        np.testing.assert_allclose(dist(x, y), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dist.embed(a), ref_emb.numpy(), rtol=1e-5, atol=1e-6)


def test_dreamsim_loading_code_with_local_checkpoints(tmp_path, rng):
    """``DreamSimDistance(cache_dir=...)`` loads through ``dreamsim(pretrained=True)``."""
    pytest.importorskip("dreamsim")
    from dreamsim import dreamsim

    cache = tmp_path / "ckpt"
    _write_dreamsim_checkpoints(cache, lora_weights=True)
    dist = DreamSimDistance(cache_dir=str(cache), dreamsim_type="open_clip_vitb32")
    model, preprocess = dreamsim(
        pretrained=True, device="cpu", cache_dir=str(cache), dreamsim_type="open_clip_vitb32"
    )
    a, b = _digits(rng, 2), _digits(rng, 2)
    with torch.no_grad():
        ref = torch.cat(
            [
                model(preprocess(Image.fromarray(x)), preprocess(Image.fromarray(y)))
                for x, y in zip(a, b)
            ]
        )
    np.testing.assert_allclose(dist(a, b), ref.double().numpy(), rtol=1e-5, atol=1e-6)


def test_gmvaluator_dreamsim_rerank_keeps_the_dreamsim_top_k(real_dreamsim, rng):
    """With every training image a candidate, the kept top-k is DreamSim's brute-force top-k."""
    model, preprocess = real_dreamsim
    train, gen = _digits(rng, 24), _digits(rng, 3)
    k = 4
    gmv = GMValuator(
        encoder=PixelEncoder(),
        rerank=DreamSimDistance(model=model, preprocess=preprocess),
        k=k,
        recall=len(train),
        index="exact",
    )
    res = gmv.fit(train).value(gen)
    with torch.no_grad():
        et = torch.cat([model.embed(preprocess(Image.fromarray(x))) for x in train]).double()
        eg = torch.cat([model.embed(preprocess(Image.fromarray(x))) for x in gen]).double()
    d = 1 - torch.nn.functional.cosine_similarity(eg[:, None], et[None], dim=-1).numpy()
    for i in range(len(gen)):
        order = np.argsort(d[i], kind="stable")
        gap = d[i][order[k]] - d[i][order[k - 1]]
        assert gap > 1e-6, "test data has a tie at the k-th place"
        assert set(res.topk_indices[i]) == set(order[:k])


@pytest.fixture(scope="module")
def real_maniqa():
    pytest.importorskip("pyiqa")
    import pyiqa.archs.maniqa_arch as maniqa_arch
    import timm

    create = timm.create_model

    def unpretrained(name, pretrained=False, **kw):  # no hub downloads: random ViT weights
        return create(name, pretrained=False, **kw)

    maniqa_arch.timm.create_model = unpretrained
    try:
        import pyiqa

        torch.manual_seed(0)
        # test_sample=1: one 224 x 224 crop per image (MANIQA's default 20 costs 20x on a CPU)
        metric = pyiqa.create_metric(
            "maniqa", device="cpu", as_loss=False, pretrained=False, test_sample=1
        )
    finally:
        maniqa_arch.timm.create_model = create
    return metric


def test_maniqa_scorer_matches_pyiqa_on_image_files(real_maniqa, rng, tmp_path):
    """Our scores == the pyiqa metric on the same images saved as PNG files (the input
    pyiqa documents), for 28 px grayscale digits (pyiqa upsamples them itself) and for an
    RGB image larger than a crop; uint8 (N, H, W), float (N, 1, H, W), NHWC and PIL inputs
    convert to the same tensor."""
    gray = _digits(rng, 2)
    rgb = (rng.random((1, 232, 240, 3)) * 255).astype(np.uint8)
    scorer = MANIQAScorer(model=real_maniqa, batch_size=2)
    for imgs, same in (
        (gray, [torch.from_numpy(gray[:, None] / 255.0).float(), gray[..., None]]),
        (rgb, [np.moveaxis(rgb, -1, 1).copy()]),
    ):
        pils = [Image.fromarray(x) for x in imgs]
        for x in same + [pils]:
            torch.testing.assert_close(scorer.convert(x), scorer.convert(imgs), rtol=0, atol=0)
        ref = []
        for j, pil in enumerate(pils):
            path = tmp_path / f"{pil.mode}_{j}.png"
            pil.save(path)
            ref.append(float(real_maniqa(str(path)).reshape(())))
        np.testing.assert_allclose(scorer(imgs), np.clip(ref, 0, 1), rtol=1e-5, atol=1e-6)


def test_maniqa_scorer_argument_checks():
    with pytest.raises(ValueError, match="batch_size"):
        MANIQAScorer(model=lambda x: x, batch_size=0)
    with pytest.raises(TypeError, match="min_size"):
        MANIQAScorer(model=lambda x: x, min_size=2.5)
    with pytest.raises(ValueError, match="batch_size"):
        DreamSimDistance(model=type("M", (), {"embed": None})(), batch_size=0)
