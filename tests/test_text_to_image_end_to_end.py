"""SurrogateSHAP's text-to-image path end to end, offline, with a real (tiny, random-weight)
diffusers ``StableDiffusionPipeline``: contributors own prompts, the bank is generated with
:class:`DiffusersTextToImage`, the proxy game uses utilities of the paper (1 − MS-SSIM
diversity, FID on open_clip embeddings), and the values are checked against exact
enumeration of the game; then the LoRA route the docs recommend for the full-data model.
"""

from __future__ import annotations

import json
import math
import string
from itertools import product

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("pytorch_msssim")
open_clip = pytest.importorskip("open_clip")

from datacredit import SurrogateSHAP  # noqa: E402
from datacredit.models import (  # noqa: E402
    CLIPScore,
    DiffusersTextToImage,
    MSSSIMDistance,
    OpenCLIPEncoder,
)
from datacredit.models.encoders import load_open_clip  # noqa: E402
from datacredit.surrogateshap import ProxyGame, SampleBank  # noqa: E402
from datacredit.surrogateshap.utilities import FID, MeanScore, SampledPairDiversity  # noqa: E402

# prompt key -> prompt; the tokenizer below knows lowercase letters only
PROMPTS = {
    "p0": "a red cat",
    "p1": "a red cat at night",
    "p2": "a blue dog",
    "p3": "a green bird in a tree",
    "p4": "a green bird flying",
    "p5": "an old yellow house",
}
# contributor -> the prompts of its training images; each prompt's training count is π_S
CONTRIBUTORS = {"alice": ["p0", "p1"], "bob": ["p2"], "carol": ["p3", "p4"], "dave": ["p5"]}
TRAIN_COUNTS = {"p0": 3, "p1": 1, "p2": 2, "p3": 1, "p4": 2, "p5": 4}
STEPS = 2
N_PER_PROMPT = 6
SIZE = 64  # unet sample_size 32 x the VAE's factor 2; MS-SSIM (win 3) needs > 32 pixels


def _tokenizer(tmp_path):
    """A CLIP BPE tokenizer from a vocabulary the test writes: characters, no merges."""
    chars = string.ascii_lowercase
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(
        str(tmp_path / "vocab.json"),
        str(tmp_path / "merges.txt"),
        model_max_length=32,
        pad_token="<|endoftext|>",
    )


def _pipeline(tokenizer, seed: int = 0):
    """A tiny Stable Diffusion pipeline; the same seed gives the same weights."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=SIZE,
    )
    text_encoder = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()),
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            max_position_embeddings=32,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return _tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def pipe(tokenizer):
    return _pipeline(tokenizer)


@pytest.fixture(scope="module")
def bank(pipe):
    gen = DiffusersTextToImage(pipe, PROMPTS, num_inference_steps=STEPS, guidance_scale=7.5)
    return SampleBank.generate(gen, list(PROMPTS), N_PER_PROMPT, seed=7, progress=False)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random-weight open_clip model (as in test_models_adapters) and its transform."""
    from _tiny_models import register_tiny_open_clip

    register_tiny_open_clip(tmp_path_factory.mktemp("clip"), "dc-t2i-tiny-clip")
    torch.manual_seed(0)
    return load_open_clip("dc-t2i-tiny-clip", None)


@pytest.fixture(scope="module")
def clip_encoder(tiny_clip):
    model, preprocess = tiny_clip
    return OpenCLIPEncoder(model=model, preprocess=preprocess, batch_size=16)


def _clip_tokenizer(texts):
    """The tiny model's vocabulary has 64 tokens, its context 8: the prompts' last 8 letters
    (their first ones are shared)."""
    return torch.tensor([[(ord(c) % 63) + 1 for c in t[-8:].ljust(8)] for t in texts])


def _all_coalitions(n: int) -> np.ndarray:
    return np.array(list(product([False, True], repeat=n)), dtype=bool)


def _exact_shapley(Z: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shapley values by the subset formula over every coalition (independent of datacredit)."""
    n = Z.shape[1]
    val = {tuple(z): float(x) for z, x in zip(Z, v)}
    phi = np.zeros(n)
    for z in Z:
        s = int(z.sum())
        for i in np.flatnonzero(~z):
            w = math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
            zi = z.copy()
            zi[i] = True
            phi[i] += w * (val[tuple(zi)] - val[tuple(z)])
    return phi


# --------------------------------------------------------------------------- 1. the bank
def test_bank_from_a_real_pipeline_is_seeded_unit_images(pipe, bank):
    assert bank.labels == list(PROMPTS)
    for lab in PROMPTS:
        x = bank.samples_for(lab)
        assert x.shape == (N_PER_PROMPT, SIZE, SIZE, 3) and x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert x.std() > 0.01  # not a constant image
    # prompts matter: two prompts' samples differ
    assert not np.allclose(bank.samples_for("p0"), bank.samples_for("p2"))
    # same seed -> bit-equal bank; another seed -> other images
    gen = DiffusersTextToImage(pipe, PROMPTS, num_inference_steps=STEPS, guidance_scale=7.5)
    again = SampleBank.generate(gen, list(PROMPTS), N_PER_PROMPT, seed=7, progress=False)
    other = SampleBank.generate(gen, ["p0"], N_PER_PROMPT, seed=8, progress=False)
    for lab in PROMPTS:
        np.testing.assert_array_equal(again.samples_for(lab), bank.samples_for(lab))
    assert not np.allclose(other.samples_for("p0"), bank.samples_for("p0"))
    # the adapter is the documented pipeline call with the label's prompt and the seed
    direct = pipe(
        prompt=PROMPTS["p3"],
        num_images_per_prompt=3,
        generator=torch.Generator().manual_seed(123),
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        output_type="np",
    ).images
    np.testing.assert_array_equal(gen("p3", 3, 123), direct)


# --------------------------------------------------------------------------- 2. the game
def _games(pipe, bank, clip_encoder, tiny_clip):
    rng = np.random.default_rng(0)
    gen = DiffusersTextToImage(pipe, PROMPTS, num_inference_steps=STEPS, guidance_scale=7.5)
    # FID's reference ("the training images"): fresh draws for two of the prompts, plus
    # noise, so that the contributors differ in FID
    reference = clip_encoder.encode(
        np.concatenate(
            [gen("p0", 3, 99), gen("p3", 3, 98), rng.random((14, SIZE, SIZE, 3)).astype(np.float32)]
        )
    )
    # v(∅): FID of an "untrained" generator, pure noise images
    noise = SampleBank({"noise": rng.random((12, SIZE, SIZE, 3)).astype(np.float32)})
    fid_empty = float(FID(clip_encoder.encode, reference).prepare(noise).evaluate([[1.0]])[0])
    fid = ProxyGame(
        bank,
        CONTRIBUTORS,
        FID(clip_encoder.encode, reference),
        label_weights=TRAIN_COUNTS,
        empty_value=fid_empty,
    )
    diversity = ProxyGame(
        bank,
        CONTRIBUTORS,
        SampledPairDiversity(MSSSIMDistance(win_size=3), n_pairs=12, seed=0),
        label_weights=TRAIN_COUNTS,
        empty_value=0.0,
    )
    model, preprocess = tiny_clip
    clip = ProxyGame(
        bank,
        CONTRIBUTORS,
        MeanScore(
            CLIPScore(model, PROMPTS, tokenizer=_clip_tokenizer, preprocess=preprocess),
            sees_label=True,
        ),
        label_weights=TRAIN_COUNTS,
        empty_value=0.0,
    )
    return {"fid": fid, "diversity": diversity, "clip": clip}, reference


@pytest.fixture(scope="module")
def games(pipe, bank, clip_encoder, tiny_clip):
    return _games(pipe, bank, clip_encoder, tiny_clip)[0]


@pytest.mark.parametrize("utility", ["fid", "diversity", "clip"])
def test_surrogateshap_recovers_exact_shapley_of_the_t2i_game(games, utility):
    game = games[utility]
    n = game.n_players
    Z = _all_coalitions(n)
    v = game(Z)
    assert np.isfinite(v).all()
    interior = v[1:-1]  # coalitions other than ∅ (first) and N (last)
    assert np.ptp(interior) > 1e-3 * np.abs(interior).max()  # contributors matter
    exact = _exact_shapley(Z, v)
    scale = np.abs(v).max()
    np.testing.assert_allclose(exact.sum(), v[-1] - v[0], atol=1e-12 * scale)
    # budget = 2^n: every coalition evaluated, exact values
    res = SurrogateSHAP(budget=2**n, seed=0).explain(game)
    assert res.players == list(CONTRIBUTORS)
    np.testing.assert_allclose(res.values, exact, rtol=0, atol=1e-9 * scale)
    # a budget below 2^n: still exactly efficient (∅ and N always evaluated)
    small = SurrogateSHAP(budget=2**n - 4, seed=0).explain(game)
    assert small.info["evaluated"] == 2**n - 4 and not small.info["exact"]
    np.testing.assert_allclose(small.values.sum(), v[-1] - v[0], rtol=0, atol=1e-9 * scale)


def test_t2i_fid_game_matches_scipy_on_pooled_embeddings(pipe, bank, clip_encoder, tiny_clip):
    """With uniform prompt weights and equal samples per prompt, the coalition's mixture is
    the pool of its prompts' images: the plug-in FID is scipy's FID of the pooled embeddings."""
    from scipy import linalg

    _, reference = _games(pipe, bank, clip_encoder, tiny_clip)
    game = ProxyGame(
        bank,
        CONTRIBUTORS,
        FID(clip_encoder.encode, reference, estimator="plugin"),
        label_weights="uniform",
    )
    z = np.array([[True, False, True, False]])  # alice + carol: p0, p1, p3, p4
    pooled = clip_encoder.encode(
        np.concatenate([bank.samples_for(p) for p in ("p0", "p1", "p3", "p4")])
    )
    mu, cov = pooled.mean(0), np.cov(pooled, rowvar=False)
    mu_r, cov_r = reference.mean(0), np.cov(reference, rowvar=False)
    covmean = linalg.sqrtm(cov @ cov_r).real
    ref = float((mu - mu_r) @ (mu - mu_r) + np.trace(cov + cov_r - 2 * covmean))
    np.testing.assert_allclose(game(z)[0], ref, rtol=1e-6)


def test_msssim_distance_takes_channels_last_images(bank):
    """Regression: DiffusersTextToImage returns (n, H, W, C); MSSSIMDistance read that as
    (n, C, H, W) and raised "too small" whatever the image size."""
    from pytorch_msssim import ms_ssim

    a, b = bank.samples_for("p0"), bank.samples_for("p2")
    dist = MSSSIMDistance(win_size=3)
    ref = 1 - ms_ssim(
        torch.from_numpy(np.moveaxis(a, -1, 1)).double(),
        torch.from_numpy(np.moveaxis(b, -1, 1)).double(),
        data_range=1.0,
        size_average=False,
        win_size=3,
    )
    np.testing.assert_allclose(dist(a, b), ref.numpy(), rtol=1e-10)
    np.testing.assert_allclose(dist(a, b), dist(np.moveaxis(a, -1, 1), np.moveaxis(b, -1, 1)))
    with pytest.raises(ValueError, match="both axis 1"):
        dist(np.zeros((2, 3, 64, 3)), np.zeros((2, 3, 64, 3)))


def test_clip_score_takes_the_banks_images_with_preprocess(bank, tiny_clip):
    """Regression: CLIPScore took only preprocessed tensors, so the documented
    ``MeanScore(CLIPScore(model, prompts), sees_label=True)`` on a bank of diffusers samples
    (n, H, W, 3) failed inside the model; with ``preprocess`` it follows open_clip's use."""
    from PIL import Image

    model, preprocess = tiny_clip
    x = bank.samples_for("p4")
    got = CLIPScore(model, PROMPTS, tokenizer=_clip_tokenizer, preprocess=preprocess)(x, "p4")
    pil = [Image.fromarray(np.round(im * 255).astype(np.uint8)) for im in x]
    with torch.no_grad():
        ei = model.encode_image(torch.stack([preprocess(im) for im in pil])).double()
        et = model.encode_text(_clip_tokenizer([PROMPTS["p4"]])).double()[0]
    cos = (ei / ei.norm(dim=-1, keepdim=True)) @ (et / et.norm())
    np.testing.assert_allclose(got, 100 * np.clip(cos.numpy(), 0, None), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="preprocess"):
        CLIPScore(model, PROMPTS, tokenizer=_clip_tokenizer)(x, "p4")


# --------------------------------------------------------------------------- 3. LoRA
def test_lora_full_data_model_through_diffusers_loading(tokenizer, pipe, bank, tmp_path):
    pytest.importorskip("peft")
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    # a "fine-tuned" LoRA: random non-zero A and B on the attention projections
    tuned = _pipeline(tokenizer)
    torch.manual_seed(1)
    tuned.unet.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights=False,
        )
    )
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(tuned.unet))
    assert layers and all(float(t.abs().max()) > 0 for t in layers.values())
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=layers)
    assert (tmp_path / "pytorch_lora_weights.safetensors").exists()

    full = _pipeline(tokenizer)  # the base weights, then the LoRA from disk
    full.load_lora_weights(tmp_path)
    gen = DiffusersTextToImage(full, PROMPTS, num_inference_steps=STEPS, guidance_scale=7.5)
    lora_bank = SampleBank.generate(gen, ["p0", "p2"], N_PER_PROMPT, seed=7, progress=False)
    again = SampleBank.generate(gen, ["p0", "p2"], N_PER_PROMPT, seed=7, progress=False)
    for lab in ("p0", "p2"):
        x = lora_bank.samples_for(lab)
        assert x.shape == (N_PER_PROMPT, SIZE, SIZE, 3) and 0 <= x.min() and x.max() <= 1
        np.testing.assert_array_equal(again.samples_for(lab), x)
        # the LoRA changes the samples of the base pipeline (same seed, same prompt)
        assert np.abs(x - bank.samples_for(lab)).max() > 1e-2
    # and the loaded pipeline is the in-memory peft model it was saved from
    ref = DiffusersTextToImage(tuned, PROMPTS, num_inference_steps=STEPS, guidance_scale=7.5)
    np.testing.assert_allclose(gen("p2", 3, 5), ref("p2", 3, 5), atol=1e-5)
