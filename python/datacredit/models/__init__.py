"""Model plumbing shared by the methods (one module per concern; torch imported lazily)."""

from datacredit.models.generators import (
    DiffusersClassConditional,
    DiffusersTextToImage,
    as_generator,
)

__all__ = ["DiffusersClassConditional", "DiffusersTextToImage", "as_generator"]
