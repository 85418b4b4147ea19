"""Shapley values of cooperative games: exact enumeration, KernelSHAP, coalition sampling.

A game is any callable mapping a bool coalition matrix (m × n_players) to utilities (m,)
with a ``players`` attribute; see :mod:`datacredit.games` for ready-made games and
:class:`datacredit.SurrogateSHAP` for the tree-surrogate estimator.
"""

from datacredit.shapley._game import (
    FunctionGame,
    ProgressGame,
    evaluate,
    game_direction,
    game_players,
)
from datacredit.shapley.adjusted import AdjustedEstimate, regression_adjusted
from datacredit.shapley.exact import exact, shapley_from_table
from datacredit.shapley.greg import greg_pairwise
from datacredit.shapley.interactions import interactions_from_table, tree_interactions
from datacredit.shapley.kernel import (
    kernel_shap,
    kernel_shap_plan,
    kernel_shap_solve,
    kernel_weights,
)
from datacredit.shapley.plan import CoalitionPlan, plan_coalitions, shapley_coefficients
from datacredit.shapley.result import ShapleyValues
from datacredit.shapley.sampling import all_coalitions, sample_coalitions, shapley_size_probs

__all__ = [
    "AdjustedEstimate",
    "CoalitionPlan",
    "FunctionGame",
    "ProgressGame",
    "ShapleyValues",
    "all_coalitions",
    "evaluate",
    "exact",
    "game_direction",
    "game_players",
    "greg_pairwise",
    "interactions_from_table",
    "kernel_shap",
    "kernel_shap_plan",
    "kernel_shap_solve",
    "kernel_weights",
    "plan_coalitions",
    "regression_adjusted",
    "sample_coalitions",
    "shapley_coefficients",
    "shapley_from_table",
    "shapley_size_probs",
    "tree_interactions",
]
