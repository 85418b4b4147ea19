"""Ready-made cooperative games (the synthetic test bed of SurrogateSHAP's Appendix E)."""

from datacredit.games.diffusion import DiffusionRecipe, DiffusionRetrainingGame
from datacredit.games.digits import DigitsRetraining
from datacredit.games.synthetic import SyntheticGame, synthetic

__all__ = [
    "DiffusionRecipe",
    "DiffusionRetrainingGame",
    "DigitsRetraining",
    "SyntheticGame",
    "synthetic",
]
