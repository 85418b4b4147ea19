"""Tiny random-weight model configurations shared by the adapter tests (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

#: An open_clip ViT with 32 x 32 inputs and 16-d embeddings (a few thousand parameters).
TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


def register_tiny_open_clip(directory: Path, name: str) -> str:
    """Write :data:`TINY_OPEN_CLIP` as ``<directory>/<name>.json`` and register it with
    open_clip under ``name``; returns ``name``."""
    import open_clip

    path = Path(directory) / f"{name}.json"
    path.write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(str(path))
    return name
