"""The demo's two models: a small CNN classifier and a tiny class-conditional UNet."""

from __future__ import annotations

import torch
from torch import nn

from datacredit.demo.data import IMAGE_SIZE, N_CLASSES

#: Class index the diffusion model uses for "no label" (classifier-free guidance).
NULL_CLASS = N_CLASSES


class DigitsCNN(nn.Module):
    """16x16 grey digits -> 10 logits.  ``classifier`` is the final Linear (DualDA's layer).

    ``features(x)`` returns the 64-d penultimate features (input of ``classifier``).
    """

    def __init__(self, width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, stride=2),  # 8x8
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),  # 4x4
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * width * 16, feature_dim),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(feature_dim, N_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def unet_config() -> dict:
    """Config of the tiny class-conditional ``diffusers.UNet2DModel`` (~0.16M parameters)."""
    return dict(
        sample_size=IMAGE_SIZE,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        num_class_embeds=N_CLASSES + 1,  # + the null class for guidance
        add_attention=False,
    )


def make_unet():
    """A freshly initialised tiny UNet (weights are loaded or trained by the caller)."""
    from diffusers import UNet2DModel

    return UNet2DModel(**unet_config())


def make_scheduler():
    """The noise schedule used for training and for DDIM sampling."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True
    )
