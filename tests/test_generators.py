"""Generator adapters with tiny randomly initialised diffusers models (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from datacredit.models import DiffusersClassConditional, DiffusersTextToImage, as_generator  # noqa: E402
from datacredit.surrogateshap import SampleBank  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models: one intra-op thread is faster (and the test machine's cores are shared)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _unet(n_classes=4):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        num_class_embeds=n_classes,
    ).eval()


def test_class_conditional_generator():
    unet = _unet()
    sched = diffusers.DDIMScheduler(num_train_timesteps=50)
    gen = DiffusersClassConditional(unet, sched, num_inference_steps=3)
    a = gen(1, 2, seed=5)
    assert a.shape == (2, 3, 8, 8) and a.dtype == np.float32
    assert 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, gen(1, 2, seed=5))  # seeded
    assert not np.allclose(a, gen(2, 2, seed=5))  # the label matters
    # guidance with the null label equal to the class is a no-op: ε_y = ε_∅
    g_same = DiffusersClassConditional(
        unet, sched, num_inference_steps=3, guidance_scale=3.0, null_label=1
    )
    np.testing.assert_allclose(g_same(1, 2, seed=5), a, atol=1e-5)
    g = DiffusersClassConditional(
        unet, sched, num_inference_steps=3, guidance_scale=3.0, null_label=3
    )
    assert not np.allclose(g(1, 2, seed=5), a, atol=1e-4)
    bank = SampleBank.generate(gen, [0, 1], 3, seed=0, batch_size=2, progress=False)
    assert bank.samples_for(0).shape == (3, 3, 8, 8)
    with pytest.raises(ValueError, match="null_label"):
        DiffusersClassConditional(unet, sched, guidance_scale=2.0)
    with pytest.raises(ValueError, match="outside"):
        gen(9, 1, 0)


class _TinyTextToImage(diffusers.DiffusionPipeline):
    """A text-to-image pipeline from configs: byte-embedding text encoder + UNet2DConditionModel."""

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        torch.manual_seed(1)
        self.text_embed = torch.nn.Embedding(256, 16)

    def encode(self, prompt):
        ids = torch.tensor(list(prompt.encode()[:8].ljust(8, b" ")), dtype=torch.long)
        return self.text_embed(ids)[None]

    @torch.no_grad()
    def __call__(
        self,
        prompt,
        num_images_per_prompt=1,
        generator=None,
        num_inference_steps=2,
        guidance_scale=1.0,
        output_type="np",
    ):
        n = num_images_per_prompt
        cond = self.encode(prompt).expand(n, -1, -1)
        x = torch.randn((n, 3, 8, 8), generator=generator)
        self.scheduler.set_timesteps(num_inference_steps)
        for t in self.scheduler.timesteps:
            eps = self.unet(x, t, encoder_hidden_states=cond).sample
            x = self.scheduler.step(eps, t, x).prev_sample
        img = ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
        return diffusers.ImagePipelineOutput(images=img)


def test_text_to_image_generator():
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    ).eval()
    pipe = _TinyTextToImage(unet, diffusers.DDIMScheduler(num_train_timesteps=50))
    prompts = {"gogh": "a painting by Van Gogh", "monet": "a painting by Monet"}
    gen = DiffusersTextToImage(
        pipe, prompts, num_inference_steps=2, guidance_scale=1.0, batch_size=2
    )
    bank = SampleBank.generate(gen, ["gogh", "monet"], 3, seed=0, progress=False)
    a, b = bank.samples_for("gogh"), bank.samples_for("monet")
    assert a.shape == (3, 8, 8, 3) and 0 <= a.min() and a.max() <= 1
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(gen("gogh", 3, 7), gen("gogh", 3, 7))
    with pytest.raises(KeyError, match="no prompt"):
        gen("dali", 1, 0)
    fgen = DiffusersTextToImage(pipe, lambda lab: f"a painting by {lab}", num_inference_steps=2)
    assert fgen("x", 1, 0).shape == (1, 8, 8, 3)


def test_plain_callable():
    gen = as_generator(lambda label, n, seed: torch.full((n, 2), float(label)))
    out = gen(3, 4, 0)
    assert isinstance(out, np.ndarray) and out.shape == (4, 2) and (out == 3).all()
    with pytest.raises(TypeError, match="label, n, seed"):
        as_generator(lambda label: label)
