"""SurrogateSHAP (Lu et al.): contributor Shapley values from a training-free proxy game
and a tree surrogate.

- :class:`SurrogateSHAP` — the estimator (coalitions → XGBoost surrogate → TreeSHAP).
- :class:`SampleBank` — each label's generated samples, produced once.
- :class:`ProxyGame` — v(S) as a utility of the mixture of the coalition's labels.
"""

from datacredit.surrogateshap.bank import SampleBank
from datacredit.surrogateshap.estimator import (
    DEFAULT_PARAMS,
    PAPER_GRID,
    SurrogateSHAP,
    cross_validate,
    fit_surrogate,
    surrogate_shapley,
)
from datacredit.surrogateshap.proxy import ProxyGame, SufficiencyReport

__all__ = [
    "ProxyGame",
    "SampleBank",
    "SufficiencyReport",
    "DEFAULT_PARAMS",
    "PAPER_GRID",
    "SurrogateSHAP",
    "cross_validate",
    "fit_surrogate",
    "surrogate_shapley",
]
