"""DualDA behind quanda's explainer interface, so quanda's metrics and benchmarks can run it.

quanda (``quanda.explainers.Explainer``) constructs an explainer as
``cls(model=..., train_dataset=..., task=..., checkpoints=..., checkpoints_load_func=...,
**expl_kwargs)`` and calls ``explain(test_data, targets)`` (an ``(n_test, n_train)`` tensor)
and ``self_influence(batch_size)`` (an ``(n_train,)`` tensor).  This wrapper implements that
contract without importing quanda (quanda pins numpy<2, which this package does not).
"""

from __future__ import annotations

from typing import Any

from datacredit.dualda.dualda import SELF_INFLUENCE_KINDS, DualDA


class DualDAExplainer:
    """quanda-compatible DualDA explainer.

    Args:
        model: the torch classifier (its parameters' device is the explainer's device).
        train_dataset: a torch ``Dataset`` yielding ``(input, label)`` (or a Hugging Face
            ``datasets.Dataset``); position ``i`` is training index ``i``.
        task: quanda's task literal; ``"image_classification"`` or ``"text_classification"``.
        checkpoints: optional checkpoint path(s); the last one is loaded into ``model``
            with ``checkpoints_load_func(model, path)`` (default: a ``.safetensors`` state
            dict; other formats need a ``checkpoints_load_func``).
        checkpoints_load_func: see ``checkpoints``.
        layer: name of the final linear layer (``model.named_modules()``), required.
        self_influence_kind: one of :data:`~datacredit.dualda.dualda.SELF_INFLUENCE_KINDS`.
        **dualda_kwargs: passed to :class:`DualDA` (``C``, ``cache_dir``, ``batch_size``, ...).

    The surrogate is fitted in the constructor (or loaded from ``cache_dir``).
    """

    accepted_tasks = ["image_classification", "text_classification"]

    def __init__(
        self,
        model: Any,
        train_dataset: Any,
        task: str = "image_classification",
        checkpoints: str | list[str] | None = None,
        checkpoints_load_func: Any = None,
        *,
        layer: str,
        self_influence_kind: str = "lambda_norm2",
        **dualda_kwargs: Any,
    ) -> None:
        import torch

        if task not in self.accepted_tasks:
            raise ValueError(
                f"task {task!r} is not supported; expected one of {self.accepted_tasks}"
            )
        if self_influence_kind not in SELF_INFLUENCE_KINDS:
            raise ValueError(
                f"unknown self_influence_kind {self_influence_kind!r}; expected one of "
                f"{', '.join(map(repr, SELF_INFLUENCE_KINDS))}"
            )
        param = next(model.parameters(), None)
        self.device = torch.device("cpu") if param is None else param.device
        self.model = model
        self.task = task
        self.train_dataset = train_dataset
        self.checkpoints = (
            []
            if checkpoints is None
            else list(checkpoints)
            if isinstance(checkpoints, list)
            else [checkpoints]
        )
        if self.checkpoints:
            load = checkpoints_load_func or _load_state_dict
            load(model, self.checkpoints[-1])
        self.self_influence_kind = self_influence_kind
        dualda_kwargs.setdefault("progress", False)
        dualda_kwargs.setdefault("device", self.device)
        self.dualda = DualDA(model, train_dataset, layer=layer, **dualda_kwargs).fit()

    def explain(self, test_data: Any, targets: Any = None) -> Any:
        """``tau_c(x, i)`` for every test sample and training sample.

        Args:
            test_data: a batch of test inputs ``(n, ...)`` (moved to the explainer's device)
                or a dict of such tensors.
            targets: class per test sample (list, tensor or int); ``None``: the model's
                prediction.

        Returns:
            float32 torch tensor ``(n, n_train)`` on the explainer's device.
        """
        import torch

        from datacredit.models.features import batch_to

        if isinstance(targets, list):
            targets = torch.tensor(targets)
        tau = self.dualda.attribute(batch_to(test_data, self.device), targets=targets)
        return torch.from_numpy(tau).to(self.device)

    def self_influence(self, batch_size: int = 32) -> Any:
        """Self-influence ``(n_train,)`` float32 tensor (``batch_size`` is accepted for
        quanda's signature; DualDA needs no pass over the data: it reads the dual
        variables of the fitted surrogate)."""
        import torch

        del batch_size
        si = self.dualda.self_influence(self.self_influence_kind)
        return torch.from_numpy(si.astype("float32")).to(self.device)


def _load_state_dict(model: Any, path: str) -> None:
    """Load a ``.safetensors`` state dict (nothing is unpickled)."""
    if not str(path).endswith(".safetensors"):
        raise ValueError(
            f"checkpoint {str(path)!r} is not a .safetensors file; pass checkpoints_load_func "
            "to load other formats (datacredit does not unpickle files)"
        )
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))
