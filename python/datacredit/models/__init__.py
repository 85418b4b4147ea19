"""Model plumbing shared by the methods (torch is imported only inside these modules)."""

from datacredit.models.features import FeatureExtractor, iterate_batches, resolve_layer

__all__ = ["FeatureExtractor", "iterate_batches", "resolve_layer"]
