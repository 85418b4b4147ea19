"""Encoder and scorer adapters: the real loading code with tiny models built here (no
downloads), equality with calling the models directly, and actionable errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from datacredit.models import (
    CallableEncoder,
    DreamSimDistance,
    LPIPSDistance,
    MANIQAScorer,
    OpenCLIPEncoder,
    PixelEncoder,
    TorchEncoder,
    make_distance,
    make_encoder,
    make_quality,
)

torch = pytest.importorskip("torch")


def test_pixels_and_callables(rng):
    imgs = rng.integers(0, 255, (7, 3, 4, 4)).astype(np.uint8)
    out = PixelEncoder(scale=1 / 255).encode(imgs)
    np.testing.assert_allclose(out, imgs.reshape(7, -1) / 255, rtol=1e-6)
    assert isinstance(make_encoder("pixels"), PixelEncoder)
    enc = make_encoder(lambda b: np.asarray(b).sum(axis=(2, 3)), batch_size=3)
    assert isinstance(enc, CallableEncoder)
    np.testing.assert_allclose(enc.encode(imgs.astype(np.float32)), imgs.sum(axis=(2, 3)))
    # a dataset of (image, label) pairs
    ds = [(torch.from_numpy(i.astype(np.float32)), 0) for i in imgs]
    np.testing.assert_allclose(PixelEncoder().encode(ds), imgs.reshape(7, -1))


def test_torch_module_encoder_restores_mode(rng):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.Dropout(0.5))
    net.train()
    x = torch.from_numpy(rng.standard_normal((9, 3, 2, 2)).astype(np.float32))
    enc = make_encoder(net, batch_size=4)
    assert isinstance(enc, TorchEncoder)
    out = enc.encode(x)
    assert net.training  # mode restored
    net.eval()
    with torch.no_grad():
        ref = net(x).numpy()
        lin = net[1]
        # float32 GEMMs blocked differently (batches of 4 vs 9): rounding bounded by
        # d * eps * (|x| @ |W|^T + |b|) per element, not by the element's own size.
        scale = x.flatten(1).abs() @ lin.weight.abs().T + lin.bias.abs()
    bound = 12 * np.finfo(np.float32).eps * scale.numpy()
    assert np.all(np.abs(out - ref) <= bound), np.max(np.abs(out - ref) / bound)


@pytest.fixture
def tiny_open_clip(tmp_path):
    pytest.importorskip("open_clip")
    from _tiny_models import register_tiny_open_clip

    return register_tiny_open_clip(tmp_path, "dc-tiny-clip")


def test_open_clip_loading_code_with_tiny_model(tiny_open_clip, rng):
    torch.manual_seed(0)
    enc = OpenCLIPEncoder(tiny_open_clip, pretrained=None, batch_size=3)
    x = torch.rand(5, 3, 32, 32)
    out = enc.encode(x)
    assert out.shape == (5, 16) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    spec = make_encoder(f"open_clip:{tiny_open_clip}/")
    assert isinstance(spec, OpenCLIPEncoder)


def test_open_clip_missing_weights_error(tiny_open_clip, tmp_path):
    with pytest.raises(RuntimeError, match="pretrained='/path/to/checkpoint.bin'"):
        OpenCLIPEncoder(tiny_open_clip, pretrained=str(tmp_path / "missing.bin"))


def test_open_clip_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(ImportError, match="pip install open_clip_torch"):
        OpenCLIPEncoder("ViT-B-32")


def test_lpips_with_untrained_network(rng):
    lpips = pytest.importorskip("lpips")
    torch.manual_seed(0)
    model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    dist = LPIPSDistance(model=model, size=None)
    a = torch.rand(4, 3, 32, 32)
    b = torch.rand(4, 3, 32, 32)
    out = dist(a, b)
    with torch.no_grad():  # lpips's documented way for [0, 1] images
        ref = model(a, b, normalize=True).reshape(-1).double().numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    assert out.shape == (4,)
    np.testing.assert_allclose(dist(a, a), 0.0, atol=1e-6)


def test_lpips_load_failure_is_explained(monkeypatch):
    lpips = pytest.importorskip("lpips")

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(lpips, "LPIPS", offline)
    with pytest.raises(RuntimeError, match="torch hub cache"):
        LPIPSDistance()
    monkeypatch.setitem(sys.modules, "lpips", None)
    with pytest.raises(ImportError, match="pip install lpips"):
        make_distance("lpips")


def test_dreamsim_and_maniqa_adapters(rng, monkeypatch):
    class Tiny(torch.nn.Module):
        def embed(self, x):
            return x.mean(dim=(2, 3))

    d = DreamSimDistance(model=Tiny())
    a, b = torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8)
    assert d(a, b).shape == (3,) and (d(a, b) >= 0).all()
    np.testing.assert_allclose(d(a, a), 0.0, atol=1e-6)
    with pytest.raises(TypeError, match="embed"):
        DreamSimDistance(model=torch.nn.Identity())
    q = MANIQAScorer(model=lambda x: x.mean(dim=(1, 2, 3)) * 3, batch_size=2)
    imgs = torch.rand(5, 3, 4, 4)
    np.testing.assert_allclose(
        q(imgs), np.clip(imgs.mean(dim=(1, 2, 3)).numpy() * 3, 0, 1), rtol=1e-6
    )
    for mod, spec, maker in (
        ("dreamsim", "dreamsim", make_distance),
        ("pyiqa", "maniqa", make_quality),
    ):
        monkeypatch.setitem(sys.modules, mod, None)
        with pytest.raises(ImportError, match=f"pip install {mod}"):
            maker(spec)


@pytest.mark.parametrize(
    ("package", "build", "message"),
    [
        ("dreamsim", "DreamSimDistance(cache_dir=sys.argv[1])", "could not load the DreamSim"),
        ("pyiqa", "MANIQAScorer()", "could not load pyiqa's MANIQA"),
    ],
)
def test_real_dreamsim_and_maniqa_loading_without_weights(tmp_path, package, build, message):
    """The real packages' loading code, offline with empty caches: our error, no hang.

    dreamsim is in the test extras and ``make install`` adds pyiqa (without its large
    dependency list); in a subprocess so the offline environment and the empty home
    directory apply from the first import.
    """
    pytest.importorskip(package)
    code = (
        "import sys\n"
        "from datacredit.models.scorers import DreamSimDistance, MANIQAScorer\n"
        "try:\n"
        f"    {build}\n"
        "except RuntimeError as exc:\n"
        "    print('ERROR:', exc)\n"
    )
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "TORCH_HOME": str(tmp_path / "torch"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "cache")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert f"ERROR: {message}" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "with network access" in out.stdout


def test_callable_scorers_validate():
    dist = make_distance(lambda a, b: np.zeros(2))
    with pytest.raises(ValueError, match="returned 2 values"):
        dist(np.zeros((3, 1)), np.zeros((3, 1)))
    qual = make_quality(lambda x: np.full(len(x), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        qual(np.zeros((2, 1)))
    assert make_quality(None) is None
    with pytest.raises(ValueError, match="unknown quality"):
        make_quality("brisque")


def test_laion_aesthetic_head_on_tiny_open_clip(tiny_open_clip, rng, tmp_path):
    from datacredit.models import LAIONAestheticScorer
    from datacredit.safetensors_io import save_safetensors

    torch.manual_seed(0)
    enc = OpenCLIPEncoder(tiny_open_clip, pretrained=None, normalize=False)
    w = rng.standard_normal((1, 16)).astype(np.float32)
    b = np.array([5.0], dtype=np.float32)
    save_safetensors(tmp_path / "head.safetensors", {"weight": w, "bias": b})
    scorer = LAIONAestheticScorer(enc, tmp_path / "head.safetensors")
    x = torch.from_numpy(rng.random((4, 3, 32, 32)).astype(np.float32))  # [0, 1] images
    e = np.asarray(enc.encode(x), dtype=np.float64)  # the encoder's conversion is tested apart
    ref = (e / np.linalg.norm(e, axis=1, keepdims=True)) @ w[0].astype(np.float64) + 5.0
    np.testing.assert_allclose(scorer(x), ref, rtol=1e-5)
    np.savez(tmp_path / "head.npz", weight=w, bias=b)
    np.testing.assert_allclose(LAIONAestheticScorer(enc, tmp_path / "head.npz")(x), ref, rtol=1e-5)
    with pytest.raises(ValueError, match="unpickle"):
        LAIONAestheticScorer(enc, _touch(tmp_path / "head.pth"))
    with pytest.raises(FileNotFoundError, match="sa_0_4"):
        LAIONAestheticScorer(enc, tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="dimension 8"):
        LAIONAestheticScorer(enc, (np.ones(8), np.zeros(1)))(x)


def _touch(path):
    path.write_bytes(b"")
    return path


def test_inception_pool3_local_weights_match_pytorch_fid(tmp_path, monkeypatch):
    """pytorch-fid's network with a random state dict from a local file: our features are
    the pool3 output pytorch-fid computes with the same weights."""
    pfi = pytest.importorskip("pytorch_fid.inception")
    import torchvision

    from datacredit.models import InceptionPool3
    from datacredit.safetensors_io import save_safetensors

    torch.manual_seed(0)
    # torchvision's Inception has the parameter names and shapes of pytorch-fid's FID blocks
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008)
    sd = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    save_safetensors(tmp_path / "inception.safetensors", sd)
    ours = InceptionPool3(tmp_path / "inception.safetensors", batch_size=2)
    x = torch.rand(3, 3, 64, 64)
    feats = ours.features(x)
    assert feats.shape == (3, 2048)
    monkeypatch.setattr(
        pfi,
        "load_state_dict_from_url",
        lambda *a, **k: {k2: torch.from_numpy(v) for k2, v in sd.items()},
    )
    ref_net = pfi.InceptionV3([3]).eval()
    with torch.no_grad():
        ref = ref_net(x)[0].flatten(1).double().numpy()
        logits = pfi.fid_inception_v3().eval().fc(ref_net(x)[0].flatten(1))
    np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=1e-6)
    probs = ours.class_probs(x)
    np.testing.assert_allclose(probs, torch.softmax(logits.double(), 1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    with pytest.raises(ValueError, match="unpickle"):
        InceptionPool3(_touch(tmp_path / "w.pth"))
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        InceptionPool3(tmp_path / "missing.safetensors")


def test_clip_score_on_tiny_open_clip(tiny_open_clip, rng):
    from datacredit.models import CLIPScore
    from datacredit.models.encoders import load_open_clip

    torch.manual_seed(0)
    model, _ = load_open_clip(tiny_open_clip, None)

    def tokenizer(texts):  # the tiny model's vocabulary has 64 tokens
        return torch.tensor([[(ord(c) % 63) + 1 for c in t[:8].ljust(8)] for t in texts])

    score = CLIPScore(model, {"a": "a red cat", "b": "a blue dog"}, tokenizer=tokenizer)
    x = torch.from_numpy(rng.standard_normal((3, 3, 32, 32)).astype(np.float32))
    got = score(x, "a")
    with torch.no_grad():
        ei = model.encode_image(x).double()
        et = model.encode_text(tokenizer(["a red cat"])).double()
    cos = (ei / ei.norm(dim=-1, keepdim=True)) @ (et[0] / et[0].norm())
    np.testing.assert_allclose(got, 100 * np.clip(cos.numpy(), 0, None), rtol=1e-6, atol=1e-9)
    assert not np.allclose(score(x, "b"), got) or (got == 0).all()
    with pytest.raises(KeyError, match="no prompt"):
        score(x, "c")


# --------------------------------------------------------------------------- image convention
def _pil_rgb(u8_nhwc):
    from PIL import Image

    return [Image.fromarray(x) for x in u8_nhwc]


def test_image_convention_layouts_and_ranges(rng):
    from datacredit.models import to_image_batch, to_pil_images

    u8 = rng.integers(0, 256, (3, 5, 6, 3)).astype(np.uint8)  # NHWC
    ref = torch.from_numpy(np.moveaxis(u8, -1, 1).astype(np.float32) / 255)
    for form in (u8, torch.from_numpy(u8), np.moveaxis(u8, -1, 1).copy(), _pil_rgb(u8), list(u8)):
        np.testing.assert_array_equal(to_image_batch(form).numpy(), ref.numpy())
    gray = rng.random((2, 7, 8)).astype(np.float32)
    np.testing.assert_array_equal(to_image_batch(gray).numpy(), gray[:, None])
    np.testing.assert_array_equal(to_image_batch(gray[:, None]).numpy(), gray[:, None])
    np.testing.assert_array_equal(to_image_batch(gray[..., None]).numpy(), gray[:, None])
    # PIL round trip of uint8 is exact
    back = to_image_batch(to_pil_images(u8)).numpy()
    np.testing.assert_array_equal(back, ref.numpy())
    x = gray.copy()
    to_image_batch(x).mul_(2)
    np.testing.assert_array_equal(x, gray)  # never modified
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_image_batch(gray * 2 - 1)  # [-1, 1] or CLIP-normalised
    with pytest.raises(ValueError, match="uint8"):
        to_image_batch(u8.astype(np.int64))
    with pytest.raises(ValueError, match="channels"):
        to_image_batch(rng.random((2, 4, 5, 5)).astype(np.float32))
    with pytest.raises(ValueError, match="both axis 1"):
        to_image_batch(rng.random((2, 3, 5, 3)).astype(np.float32))
    with pytest.raises(ValueError, match="share size"):
        to_image_batch([u8[0], u8[0, :4]])


def test_open_clip_converts_like_its_own_preprocess(tiny_open_clip, rng):
    """Every input form gives what open_clip's documented use gives:
    model.encode_image(preprocess(pil)), l2-normalised."""
    from PIL import Image

    torch.manual_seed(0)
    enc = OpenCLIPEncoder(tiny_open_clip, pretrained=None, batch_size=2)
    model, preprocess = enc.module, enc.preprocess

    def reference(pils):
        with torch.no_grad():
            out = model.encode_image(torch.stack([preprocess(p) for p in pils]))
        return (out / out.norm(dim=-1, keepdim=True)).numpy()

    u8 = rng.integers(0, 256, (5, 40, 36, 3)).astype(np.uint8)
    ref = reference(_pil_rgb(u8))
    for form in (u8, np.moveaxis(u8, -1, 1).copy(), torch.from_numpy(u8), _pil_rgb(u8)):
        np.testing.assert_allclose(enc.encode(form), ref, rtol=1e-5, atol=1e-6)
    # float [0, 1] images: quantised to 8 bits, as a saved PNG would be
    f = rng.random((3, 1, 28, 28)).astype(np.float32)
    g8 = np.round(f[:, 0] * 255).astype(np.uint8)
    ref_gray = reference([Image.fromarray(x) for x in g8])  # open_clip converts L -> RGB
    np.testing.assert_allclose(enc.encode(f), ref_gray, rtol=1e-5, atol=1e-6)
    # CLIP-normalised tensors are refused, not silently re-normalised
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        enc.encode(torch.stack([preprocess(p) for p in _pil_rgb(u8)]))
    # a model passed without preprocess gets open_clip's image_transform for its size
    enc2 = OpenCLIPEncoder(model=model, batch_size=4)
    np.testing.assert_allclose(enc2.encode(u8), ref, rtol=1e-4, atol=1e-5)


def test_lpips_converts_gray_uint8_and_sizes(rng):
    """Our [0, 1] / uint8 / grayscale / PIL input against lpips called as documented
    (RGB in [0, 1] with normalize=True), at the 64 x 64 patch size."""
    lpips = pytest.importorskip("lpips")
    torch.manual_seed(0)
    model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    dist = LPIPSDistance(model=model)  # size=64
    a = torch.rand(3, 1, 16, 16)
    b = torch.rand(3, 1, 16, 16)

    def up(x):
        return torch.nn.functional.interpolate(
            x.expand(-1, 3, -1, -1), size=(64, 64), mode="bilinear", antialias=True
        ).clamp(0, 1)

    with torch.no_grad():
        ref = model(up(a), up(b), normalize=True).reshape(-1).double().numpy()
    np.testing.assert_allclose(dist(a, b), ref, rtol=1e-5)
    # the bug of issue 13: [0, 1] inputs treated as [-1, 1] (normalize=False) differ
    with torch.no_grad():
        wrong = model(up(a), up(b)).reshape(-1).double().numpy()
    assert np.abs(wrong - ref).max() > 1e-3
    u8a = (rng.random((2, 64, 64, 3)) * 255).astype(np.uint8)
    u8b = (rng.random((2, 64, 64, 3)) * 255).astype(np.uint8)
    ta = torch.from_numpy(np.moveaxis(u8a, -1, 1) / 255).float()
    tb = torch.from_numpy(np.moveaxis(u8b, -1, 1) / 255).float()
    with torch.no_grad():
        ref_u8 = model(ta, tb, normalize=True).reshape(-1).double().numpy()
    np.testing.assert_allclose(dist(u8a, u8b), ref_u8, rtol=1e-5)
    np.testing.assert_allclose(dist(_pil_rgb(u8a), _pil_rgb(u8b)), ref_u8, rtol=1e-5)
    with pytest.raises(ValueError, match="one size"):
        LPIPSDistance(model=model, size=None)(a, torch.rand(3, 1, 8, 8))


def test_dreamsim_embeds_with_its_preprocess_and_uses_cosine(rng):
    """DreamSim's documented use: model.embed(preprocess(pil)); distance 1 - cos."""
    from PIL import Image

    class TinyDreamSim(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 8, stride=8)

        def embed(self, x):
            assert x.shape[1:] == (3, 224, 224) and 0 <= x.min() and x.max() <= 1
            return self.conv(x).flatten(1)

        def forward(self, a, b):
            return 1 - torch.nn.functional.cosine_similarity(self.embed(a), self.embed(b))

    torch.manual_seed(0)
    m = TinyDreamSim()
    d = DreamSimDistance(model=m, batch_size=2)
    gray = rng.random((3, 1, 28, 28)).astype(np.float32)
    other = rng.random((3, 1, 28, 28)).astype(np.float32)

    def pre(x):  # what dreamsim's preprocess does to a PIL image
        img = Image.fromarray(np.round(x[0] * 255).astype(np.uint8)).convert("RGB")
        img = img.resize((224, 224), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.asarray(img).astype(np.float32) / 255).permute(2, 0, 1)

    with torch.no_grad():
        ref = m(torch.stack([pre(x) for x in gray]), torch.stack([pre(x) for x in other]))
    np.testing.assert_allclose(d(gray, other), ref.double().numpy(), rtol=1e-4, atol=1e-6)
    e = d.embed(gray)
    with torch.no_grad():
        np.testing.assert_allclose(e, m.embed(torch.stack([pre(x) for x in gray])), rtol=1e-5)


def test_maniqa_gets_rgb_unit_range_and_optional_min_size(rng):
    """RGB float [0, 1] always; sizes untouched by default (pyiqa crops and upsamples
    itself), upsampled to ``min_size`` when it is set (for a model that cannot)."""
    seen = []

    def fake(x):
        seen.append(tuple(x.shape))
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        return x.mean(dim=(1, 2, 3))

    u8 = (rng.random((3, 28, 28)) * 255).astype(np.uint8)  # grayscale (N, H, W)
    plain = MANIQAScorer(model=fake, batch_size=2)(u8)
    assert seen == [(2, 3, 28, 28), (1, 3, 28, 28)]
    np.testing.assert_allclose(plain, (u8 / 255.0).mean(axis=(1, 2)), rtol=1e-5)
    seen.clear()
    q = MANIQAScorer(model=fake, batch_size=2, min_size=224)
    out = q(u8)
    assert seen == [(2, 3, 224, 224), (1, 3, 224, 224)]
    t = torch.from_numpy(u8[:, None] / 255).float().expand(-1, 3, -1, -1)
    ref = (
        torch.nn.functional.interpolate(t, size=(224, 224), mode="bicubic", antialias=True)
        .clamp(0, 1)
        .mean(dim=(1, 2, 3))
    )
    np.testing.assert_allclose(out, ref.double().numpy(), rtol=1e-5)


def test_pixel_l2_against_numpy(rng):
    from datacredit.models import PixelL2Distance

    a = (rng.random((4, 8, 8, 3)) * 255).astype(np.uint8)
    b = rng.random((4, 3, 8, 8)).astype(np.float32)
    ref = np.linalg.norm(
        (np.moveaxis(a, -1, 1) / 255.0 - b.astype(np.float64)).reshape(4, -1), axis=1
    )
    np.testing.assert_allclose(PixelL2Distance()(a, b), ref, rtol=1e-6)
    g = rng.random((4, 1, 8, 8)).astype(np.float32)
    ref_g = np.linalg.norm((np.repeat(g, 3, 1) - b).reshape(4, -1).astype(np.float64), axis=1)
    np.testing.assert_allclose(PixelL2Distance()(g, b), ref_g, rtol=1e-6)
    assert isinstance(make_distance("pixel_l2"), PixelL2Distance)
