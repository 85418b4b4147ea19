"""XDA: LRP heatmaps of DualDA attributions on the test input and on the training input.

For a test input ``x``, a training sample ``i`` and class ``c``, the relevance at the
feature layer is seeded as ``R = lambda_ic * f_x (*) f_i`` (element-wise), which sums to
``tau_c(x, i)``, and propagated with zennit's LRP rules through the feature extractor
to the test input (test heatmap) and, separately, to the training input (train heatmap).
LRP is linear in the seed for fixed activations, so the test heatmaps summed over all
support vectors equal the LRP heatmap of the surrogate output ``w_c . f_x`` (paper §3.2).

Conservation (each heatmap sums to ``tau_c(x, i)``) needs three things, all defaults here:

* **Canonizers per architecture** (:func:`default_canonizers`): torchvision ResNets get
  zennit's ``ResNetCanonizer`` (BatchNorm merged into the convolutions, and the residual
  ``identity + out`` routed through a ``zennit.layer.Sum`` module that the ``Norm`` rule
  splits proportionally; a plain tensor addition would hand the full relevance to *both*
  branches); other models with BatchNorm get ``SequentialMergeBatchNorm``.
* **Biases are not relevant**: the rules are built with ``zero_params="bias"``.  The
  forward pass is the model's own (biases, hence which ReLUs are open, are unchanged);
  only the redistribution ignores the bias terms.  A rule that keeps the bias gives it a
  share ``b_j / z_j`` of each neuron's relevance that then vanishes (merged BatchNorm shifts
  are biases too): on a random-weight ResNet-50 the maps sum to 0.42x tau with biases
  kept, 1.00x without.
* **No unhandled merges**: a tensor addition or product of two input-dependent tensors
  outside a zennit ``Sum`` module duplicates or mis-scales relevance.  :class:`XDA`
  traces the model with ``torch.fx`` (canonizers applied) and raises if it finds one, and
  checks the conservation of every batch of heatmaps numerically (``conservation_rtol``).
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from datacredit._arrays import as_integer_array, check_int
from datacredit.dualda.dualda import DualDA
from datacredit.models.features import INPUT_KEYS, select_inputs, split_batch

COMPOSITES = (
    "EpsilonPlusFlat",
    "EpsilonPlus",
    "EpsilonAlpha2Beta1",
    "EpsilonAlpha2Beta1Flat",
    "EpsilonGammaBox",
)


def default_canonizers(model: Any) -> list[Any]:
    """zennit canonizers that make LRP conservative on ``model``'s architecture.

    torchvision ``ResNet`` blocks (``BasicBlock``, ``Bottleneck``): ``[ResNetCanonizer()]``;
    torchvision ``VGG`` with BatchNorm: ``[VGGCanonizer()]``; any other model with a
    BatchNorm layer: ``[SequentialMergeBatchNorm()]`` (merges each BatchNorm into the
    linear layer registered just before it; one that follows no linear layer keeps
    zennit's ``Pass`` rule, which is conservative too); otherwise ``[]``.
    """
    import torch
    from zennit.canonizers import SequentialMergeBatchNorm

    modules = list(model.modules())
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck
        from torchvision.models.vgg import VGG
    except ImportError:  # torchvision is optional: no torchvision blocks to look for
        BasicBlock = Bottleneck = VGG = ()  # noqa: N806
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in modules)
    if BasicBlock and any(isinstance(m, (BasicBlock, Bottleneck)) for m in modules):
        from zennit.torchvision import ResNetCanonizer

        return [ResNetCanonizer()]
    if not has_bn:
        return []
    if VGG and isinstance(model, VGG):
        from zennit.torchvision import VGGCanonizer

        return [VGGCanonizer()]
    return [SequentialMergeBatchNorm()]


def _linear_layer_names(model: Any, n: int) -> list[str]:
    """Names of the first ``n`` linear layers (conv or dense, registration order)."""
    from zennit.types import Linear

    return [name for name, m in model.named_modules() if isinstance(m, Linear)][:n]


def _make_composite(
    composite: Any, canonizers: Any, model: Any, zero_bias: bool, flat_layers: int | None
) -> Any:
    from zennit import composites as zc
    from zennit.rules import Flat

    if canonizers is None:
        canonizers = default_canonizers(model)
    if isinstance(composite, str):
        if composite not in COMPOSITES:
            raise ValueError(
                f"unknown composite {composite!r}; expected one of {', '.join(map(repr, COMPOSITES))} "
                "or a zennit Composite instance"
            )
        if composite == "EpsilonGammaBox":
            raise ValueError(
                "EpsilonGammaBox needs the input bounds: pass "
                "zennit.composites.EpsilonGammaBox(low=..., high=..., canonizers=..., "
                "zero_params='bias') instead"
            )
        zero_params = "bias" if zero_bias else None
        base = getattr(zc, composite)(zero_params=zero_params)
        if flat_layers is None:
            return getattr(zc, composite)(zero_params=zero_params, canonizers=list(canonizers))
        # The paper's VGG-16 setting: the flat rule on the first `flat_layers` linear layers,
        # the composite's own rules elsewhere (first match wins in a MixedComposite).
        names = tuple(_linear_layer_names(model, flat_layers))
        flat = zc.NameMapComposite(name_map=[(names, Flat(zero_params=zero_params))])
        return zc.MixedComposite([flat, base], canonizers=list(canonizers))
    if not hasattr(composite, "context"):
        raise TypeError(f"composite must be a name or a zennit Composite, got {type(composite)}")
    if flat_layers is not None:
        raise ValueError("flat_layers applies to a named composite; build it into your Composite")
    return composite


_MERGE_FUNCTIONS = {
    operator.add,
    operator.iadd,
    operator.sub,
    operator.isub,
    operator.mul,
    operator.imul,
    operator.truediv,
}
_MERGE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}


def unhandled_merges(
    model: Any, layer: str, example: Any, canonizers: list[Any]
) -> list[str] | None:
    """Tensor additions/products of two input-dependent tensors before ``layer``.

    The model is traced with ``torch.fx`` while ``canonizers`` are applied (a canonizer
    such as ``ResNetCanonizer`` replaces the additions by a zennit ``Sum`` module, which
    LRP handles).  Returns the offending graph nodes as ``"name (target)"`` strings, or
    ``None`` when the model cannot be traced (the numerical check still runs).

    Complexity: one traced forward pass on ``example`` (a batch of one).
    """
    import torch
    from torch.fx import Node, symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    class _Root(torch.nn.Module):  # fx traces the root's class forward, a child's own one
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> Any:
            return self.model(x)

    handles = [h for c in canonizers for h in c.apply(model)]
    try:
        try:
            gm = symbolic_trace(_Root())
            ShapeProp(gm).propagate(example)
        except Exception:  # any model fx cannot trace: fall back to the numerical check
            return None
    finally:
        for h in handles:
            h.remove()
    graph = list(gm.graph.nodes)
    from_input: set[Node] = set()
    for node in graph:  # nodes whose value depends on the model input (topological order)
        if node.op == "placeholder" or any(
            isinstance(a, Node) and a in from_input for a in node.all_input_nodes
        ):
            from_input.add(node)
    scope = graph
    feature = next(
        (n for n in graph if n.op == "call_module" and n.target == f"model.{layer}"), None
    )
    if feature is not None:  # only what feeds the feature layer is propagated by LRP
        ancestors: set[Node] = set()
        stack = list(feature.all_input_nodes)
        while stack:
            node = stack.pop()
            if node not in ancestors:
                ancestors.add(node)
                stack.extend(node.all_input_nodes)
        scope = [n for n in graph if n in ancestors]
    found = []
    for node in scope:
        merge = (node.op == "call_function" and node.target in _MERGE_FUNCTIONS) or (
            node.op == "call_function" and node.target in (torch.add, torch.sub, torch.mul)
        )
        merge = merge or (node.op == "call_method" and node.target in _MERGE_METHODS)
        if not merge:
            continue
        tensors = [
            a
            for a in node.args
            if isinstance(a, Node) and a in from_input and "tensor_meta" in a.meta
        ]
        if len(tensors) >= 2:
            found.append(f"{node.name} ({getattr(node.target, '__name__', node.target)})")
    return found


def _pixel_input(x: Any, name: str) -> Any:
    """``x`` as a floating-point tensor: LRP relevance lives on a real-valued input (pixels);
    keyword inputs (token ids, attention masks) have none, nor do integer tensors."""
    import torch

    if isinstance(x, dict):
        cols = ", ".join(f"{k} ({getattr(v, 'dtype', type(v).__name__)})" for k, v in x.items())
        raise TypeError(
            f"XDA needs {name} to give the model one floating-point input tensor (its "
            f"heatmaps are relevance per input element); it gives keyword inputs ({cols}), "
            "which have no pixel-space relevance (token ids are integers). Name the input "
            f"column one of {', '.join(map(repr, INPUT_KEYS))}, or use DualDA alone"
        )
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if not x.is_floating_point():
        raise TypeError(
            f"XDA needs {name} to be floating-point inputs (relevance is a gradient-like "
            f"quantity per input element), got dtype {x.dtype}"
        )
    return x


class XDA:
    """Explains DualDA attributions with LRP heatmaps (zennit).

    Args:
        dualda: a fitted :class:`DualDA`.
        composite: a zennit composite name (``"EpsilonPlusFlat"`` default, the paper's:
            flat rule on the first linear layer, z-plus on convolutions, epsilon on dense
            layers; ``"EpsilonPlus"``, ``"EpsilonAlpha2Beta1"``,
            ``"EpsilonAlpha2Beta1Flat"``) or a ``zennit.core.Composite`` instance (e.g.
            ``EpsilonGammaBox(low, high, zero_params="bias", canonizers=...)``), used as is.
        canonizers: zennit canonizers for a named composite; ``None`` picks them from the
            architecture (:func:`default_canonizers`).  For an architecture with residual
            additions that zennit has no canonizer for, pass your own (e.g. a
            ``zennit.canonizers.AttributeCanonizer`` whose forward sums the branches with
            ``zennit.layer.Sum`` over ``torch.stack([a, b], -1)``, as ``ResNetCanonizer``).
        zero_bias: treat biases as not relevant in the LRP rules (``zero_params="bias"``),
            the default: each neuron's relevance goes to its inputs only, so heatmaps sum
            to ``tau``.  ``False`` keeps zennit's default, where the bias absorbs a share.
        flat_layers: with a named composite, apply the flat rule to the first
            ``flat_layers`` linear (conv/dense) layers in registration order (the paper
            uses 10 on VGG-16 for legibility); ``None``: the composite's own first-layer
            choice.
        batch_size: training samples explained per backward pass.
        conservation_rtol: every batch of heatmaps is checked: ``|sum(map_j) - tau_j| <=
            conservation_rtol * max_j |tau_j|`` on both sides, else ``RuntimeError``
            (catches architectures the canonizers do not cover).  ``None`` disables it.

    The training data may take every form DualDA accepts (``(X, y)``, a ``Dataset`` or a
    ``DataLoader`` of tuples or dicts, a Hugging Face ``datasets.Dataset``; the model may
    return a ``ModelOutput``), read back with
    :func:`datacredit.models.features.select_inputs`, as long as it gives the model one
    floating-point input tensor (dicts: under one of
    :data:`~datacredit.models.features.INPUT_KEYS`, e.g. ``pixel_values``).

    Raises:
        TypeError: the training data gives keyword inputs (e.g. text ``input_ids``) or
            integer inputs: they have no pixel-space relevance.
        ValueError: unknown composite; the traced model adds or multiplies two
            input-dependent tensors outside a zennit ``Sum`` (LRP would duplicate
            relevance): pass a canonizer that handles it.
    """

    def __init__(
        self,
        dualda: DualDA,
        *,
        composite: Any = "EpsilonPlusFlat",
        canonizers: Any = None,
        zero_bias: bool = True,
        flat_layers: int | None = None,
        batch_size: int = 32,
        conservation_rtol: float | None = 0.05,
    ) -> None:
        if not isinstance(dualda, DualDA):
            raise TypeError(f"dualda must be a DualDA instance, got {type(dualda).__name__}")
        dualda._require_fit()
        if flat_layers is not None and (
            isinstance(flat_layers, bool) or not isinstance(flat_layers, int) or flat_layers < 1
        ):
            raise ValueError(f"flat_layers must be a positive integer or None, got {flat_layers!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if conservation_rtol is not None and not conservation_rtol > 0:
            raise ValueError(f"conservation_rtol must be > 0 or None, got {conservation_rtol!r}")
        self.dualda = dualda
        self.composite = _make_composite(
            composite, canonizers, dualda.model, bool(zero_bias), flat_layers
        )
        self.batch_size = batch_size
        self.conservation_rtol = conservation_rtol
        self._check_graph()

    def _check_graph(self) -> None:
        dd = self.dualda
        was_training = dd.model.training
        dd.model.eval()
        try:
            found = unhandled_merges(
                dd.model,
                dd.layer,
                self._train_inputs(np.array([0])).to(dd.device),
                list(getattr(self.composite, "canonizers", [])),
            )
        finally:
            dd.model.train(was_training)
        if found:
            raise ValueError(
                f"the model adds or multiplies input-dependent tensors before layer "
                f"{dd.layer!r} outside a zennit Sum module ({', '.join(found[:5])}"
                f"{' ...' if len(found) > 5 else ''}); LRP would hand the full relevance to "
                "both branches and the heatmaps would not sum to tau. Pass canonizers=[...] "
                "that route these merges through zennit.layer.Sum (ResNetCanonizer does this "
                "for torchvision ResNets)"
            )

    def _train_inputs(self, indices: np.ndarray) -> Any:
        # The batch DualDA extracted features from (same conversion: dict batches, HF
        # datasets, DataLoader collation), restricted to `indices`.
        return _pixel_input(select_inputs(self.dualda.train_data, indices), "dualda.train_data")

    def _test_batch(self, test_input: Any) -> Any:
        """``test_input`` as a batch of one ``(1, *train_shape)`` on the DualDA device."""
        if isinstance(test_input, dict):  # a Hugging Face style batch, as the training data
            test_input = split_batch(test_input)[0]
        x = _pixel_input(self.dualda._check_device(test_input, "test_input"), "test_input")
        train_shape = tuple(self._train_inputs(np.array([0])).shape[1:])
        if tuple(x.shape) == train_shape:
            x = x.unsqueeze(0)
        if x.shape[0] != 1 or tuple(x.shape[1:]) != train_shape:
            raise ValueError(
                f"test_input must have shape {train_shape} (or (1, *{train_shape})), got "
                f"{tuple(x.shape)}"
            )
        return x

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

    def _check_conservation(self, maps: Any, tau: np.ndarray, side: str) -> None:
        if self.conservation_rtol is None:
            return
        sums = maps.reshape(maps.shape[0], -1).double().sum(1).cpu().numpy()
        scale = float(np.abs(tau).max())
        err = float(np.abs(sums - tau).max())
        if scale > 0 and err > self.conservation_rtol * scale:
            raise RuntimeError(
                f"the {side} heatmaps do not conserve tau: max |sum - tau| = {err:.3g} > "
                f"conservation_rtol={self.conservation_rtol:g} x max|tau| = {scale:.3g}. The "
                "canonizers do not cover this architecture (an unhandled residual addition "
                "or scaling) or the rules keep biases; pass canonizers=[...] for it "
                "(conservation_rtol=None skips this check)"
            )

    def explain(
        self, test_input: Any, train_indices: Any, target: int | None = None
    ) -> tuple[Any, Any]:
        """Test and train heatmaps for one test input and several training samples.

        Args:
            test_input: one input, shaped like a training input ``(C, H, W)`` (or with a
                leading batch dimension of 1), on the DualDA device; or a dict batch of one
                as the training data gives it (its :data:`INPUT_KEYS` tensor is used).
            train_indices: training indices ``(M,)`` (non-support samples give zero maps).
            target: class to explain; default: the model's prediction.

        Returns:
            ``(test_heatmaps, train_heatmaps)``, torch tensors ``(M, *input_shape)``: pair
            ``j`` explains ``tau_c(x, train_indices[j])`` on the test input and on the
            training input; every channel is kept (sum over dim 1 for a 2-D map).  Each
            map sums to ``tau`` (checked, see ``conservation_rtol``).

        Raises:
            RuntimeError: a batch of heatmaps breaks conservation (see the class).

        Complexity: ``ceil(M / batch_size)`` forward+backward passes for each side.
        """
        import torch

        dd = self.dualda
        x = self._test_batch(test_input)
        idx = as_integer_array(train_indices, "train_indices").reshape(-1)
        if idx.size == 0:
            raise ValueError("train_indices is empty")
        if idx.min() < 0 or idx.max() >= dd.n_train:
            raise ValueError(f"train_indices must lie in [0, {dd.n_train})")
        f_test, out = dd._features(x, "test_input")
        c = int(out.argmax(1)[0]) if target is None else check_int(target, "target")
        if not 0 <= c < dd.n_classes:
            raise ValueError(f"target must lie in [0, {dd.n_classes}), got {c}")
        test_maps, train_maps = [], []
        for start in range(0, idx.size, self.batch_size):
            chunk = idx[start : start + self.batch_size]
            xt = self._train_inputs(chunk).to(dd.device)
            f_train, _ = dd._features(xt, "the training inputs")
            lam = dd.dual_coef_rows(chunk)[:, c]
            seed_np = lam[:, None] * f_test[0][None, :].astype(np.float64) * f_train
            tau = seed_np.sum(1)
            seed = torch.from_numpy(seed_np.astype(np.float32)).to(dd.device)
            test_maps.append(self._relevance(x.expand(len(chunk), *x.shape[1:]), seed))
            train_maps.append(self._relevance(xt, seed))
            self._check_conservation(test_maps[-1], tau, "test")
            self._check_conservation(train_maps[-1], tau, "train")
        return torch.cat(test_maps), torch.cat(train_maps)

    def surrogate_heatmap(self, test_input: Any, target: int | None = None) -> Any:
        """LRP heatmap ``(1, *input_shape)`` of the surrogate output ``w_c . f_x`` (seed
        ``f_x (*) w_c``) for one ``test_input`` (as in :meth:`explain`); the sum of
        :meth:`explain`'s test heatmaps over all support vectors equals it."""
        import torch

        dd = self.dualda
        x = self._test_batch(test_input)
        f_test, out = dd._features(x, "test_input")
        c = int(out.argmax(1)[0]) if target is None else check_int(target, "target")
        seed = torch.from_numpy((f_test * dd.coef[c][None, :]).astype(np.float32)).to(dd.device)
        return self._relevance(x, seed)
