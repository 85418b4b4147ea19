"""XDA: LRP heatmaps of DualDA attributions on the test input and on the training input.

For a test input ``x``, a training sample ``i`` and class ``c``, the relevance at the
feature layer is seeded as ``R = lambda_ic * f_x (*) f_i`` (element-wise), which sums to
``tau_c(x, i)``, and propagated with zennit's LRP rules through the feature extractor
to the test input (test heatmap) and, separately, to the training input (train heatmap).
LRP is linear in the seed for fixed activations, so the test heatmaps summed over all
support vectors equal the LRP heatmap of the surrogate output ``w_c . f_x`` (paper §3.2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit.dualda.dualda import DualDA

COMPOSITES = (
    "EpsilonPlusFlat",
    "EpsilonPlus",
    "EpsilonAlpha2Beta1",
    "EpsilonAlpha2Beta1Flat",
    "EpsilonGammaBox",
)


def _make_composite(composite: Any, canonizers: Any, model: Any) -> Any:
    import torch
    from zennit import composites as zc
    from zennit.canonizers import SequentialMergeBatchNorm

    if canonizers is None:
        has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        canonizers = [SequentialMergeBatchNorm()] if has_bn else []
    if isinstance(composite, str):
        if composite not in COMPOSITES:
            raise ValueError(
                f"unknown composite {composite!r}; expected one of {', '.join(map(repr, COMPOSITES))} "
                "or a zennit Composite instance"
            )
        if composite == "EpsilonGammaBox":
            raise ValueError(
                "EpsilonGammaBox needs the input bounds: pass "
                "zennit.composites.EpsilonGammaBox(low=..., high=..., canonizers=...) instead"
            )
        return getattr(zc, composite)(canonizers=list(canonizers))
    if not hasattr(composite, "context"):
        raise TypeError(f"composite must be a name or a zennit Composite, got {type(composite)}")
    return composite


class XDA:
    """Explains DualDA attributions with LRP heatmaps (zennit).

    Args:
        dualda: a fitted :class:`DualDA`.
        composite: a zennit composite name (``"EpsilonPlusFlat"`` default,
            ``"EpsilonPlus"``, ``"EpsilonAlpha2Beta1"``, ``"EpsilonAlpha2Beta1Flat"``) or a
            ``zennit.core.Composite`` instance (e.g. ``EpsilonGammaBox(low, high)``).
        canonizers: zennit canonizers for a named composite; ``None`` merges BatchNorm
            layers into the preceding linear layers when the model has any (pass e.g.
            ``[ResNetCanonizer()]`` for torchvision ResNets).
        batch_size: training samples explained per backward pass.
    """

    def __init__(
        self,
        dualda: DualDA,
        *,
        composite: Any = "EpsilonPlusFlat",
        canonizers: Any = None,
        batch_size: int = 32,
    ) -> None:
        if not isinstance(dualda, DualDA):
            raise TypeError(f"dualda must be a DualDA instance, got {type(dualda).__name__}")
        dualda._require_fit()
        self.dualda = dualda
        self.composite = _make_composite(composite, canonizers, dualda.model)
        self.batch_size = int(batch_size)

    def _train_inputs(self, indices: np.ndarray) -> Any:
        import torch
        from torch.utils.data import DataLoader, Dataset

        data = self.dualda.train_data
        if isinstance(data, DataLoader):
            data = data.dataset
        if isinstance(data, Dataset):
            items = [data[int(i)] for i in indices]
            xs = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
            return torch.stack([torch.as_tensor(x) for x in xs])
        if isinstance(data, (tuple, list)):
            x = data[0]
            x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
            return x[torch.as_tensor(indices)]
        raise TypeError(f"cannot index the training data of type {type(data).__name__}")

    def _relevance(self, inputs: Any, seed: Any) -> Any:
        """LRP relevance at ``inputs`` (batch) for feature-layer relevance ``seed`` (batch, d)."""
        import torch

        dd = self.dualda
        x = inputs.detach().clone().to(dd.device).requires_grad_(True)
        was_training = dd.model.training
        dd.model.eval()
        try:
            with self.composite.context(dd.model):
                feats, _ = dd.extractor(x, grad=True)
                (grad,) = torch.autograd.grad(feats, x, grad_outputs=seed.to(feats.dtype))
        finally:
            dd.model.train(was_training)
        return grad.detach()

    def explain(
        self, test_input: Any, train_indices: Any, target: int | None = None
    ) -> tuple[Any, Any]:
        """Test and train heatmaps for one test input and several training samples.

        Args:
            test_input: one input, shaped like a training input ``(C, H, W)`` (or with a
                leading batch dimension of 1), on the DualDA device.
            train_indices: training indices ``(M,)`` (non-support samples give zero maps).
            target: class to explain; default: the model's prediction.

        Returns:
            ``(test_heatmaps, train_heatmaps)``, torch tensors ``(M, *input_shape)``: pair
            ``j`` explains ``tau_c(x, train_indices[j])`` on the test input and on the
            training input; every channel is kept (sum over dim 1 for a 2-D map).  Each
            test map sums to ``tau`` up to LRP's own conservation error.

        Complexity: ``ceil(M / batch_size)`` forward+backward passes for each side.
        """
        import torch

        dd = self.dualda
        x = dd._check_device(test_input, "test_input")
        train_shape = tuple(self._train_inputs(np.array([0])).shape[1:])
        if tuple(x.shape) == train_shape:
            x = x.unsqueeze(0)
        if x.shape[0] != 1 or tuple(x.shape[1:]) != train_shape:
            raise ValueError(
                f"test_input must have shape {train_shape} (or (1, *{train_shape})), got "
                f"{tuple(x.shape)}"
            )
        idx = np.asarray(train_indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError("train_indices is empty")
        if idx.min() < 0 or idx.max() >= dd.n_train:
            raise ValueError(f"train_indices must lie in [0, {dd.n_train})")
        f_test, out = dd._features(x, "test_input")
        c = int(out.argmax(1)[0]) if target is None else int(target)
        if not 0 <= c < dd.n_classes:
            raise ValueError(f"target must lie in [0, {dd.n_classes}), got {c}")
        lam = dd.global_attribution()[:, c]
        test_maps, train_maps = [], []
        for start in range(0, idx.size, self.batch_size):
            chunk = idx[start : start + self.batch_size]
            xt = self._train_inputs(chunk).to(dd.device)
            f_train, _ = dd._features(xt, "the training inputs")
            seed = torch.from_numpy(
                (lam[chunk, None] * f_test[0][None, :] * f_train).astype(np.float32)
            ).to(dd.device)
            test_maps.append(self._relevance(x.expand(len(chunk), *x.shape[1:]), seed))
            train_maps.append(self._relevance(xt, seed))
        return torch.cat(test_maps), torch.cat(train_maps)

    def surrogate_heatmap(self, test_input: Any, target: int | None = None) -> Any:
        """LRP heatmap of the surrogate output ``w_c . f_x`` (seed ``f_x (*) w_c``); the sum
        of :meth:`explain`'s test heatmaps over all support vectors equals it."""
        import torch

        dd = self.dualda
        x = dd._check_device(test_input, "test_input")
        if x.dim() == len(self._train_inputs(np.array([0])).shape) - 1:
            x = x.unsqueeze(0)
        f_test, out = dd._features(x, "test_input")
        c = int(out.argmax(1)[0]) if target is None else int(target)
        seed = torch.from_numpy((f_test * dd.coef[c][None, :]).astype(np.float32)).to(dd.device)
        return self._relevance(x, seed)
