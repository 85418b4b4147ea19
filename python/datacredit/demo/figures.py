"""Matplotlib figures of the demo report, each returned as PNG bytes."""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit.demo.report import figure_png


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _img(ax, image: np.ndarray, title: str | None = None, cmap: str = "gray", **kw) -> None:
    ax.imshow(np.asarray(image).squeeze(), cmap=cmap, **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def _paired_bars(ax, players: list[str], series: dict[str, Any], title: str) -> None:
    """Grouped horizontal bars of each estimate's ``improvement`` (positive = makes the
    generator better), players ordered most helpful first by the first estimate."""
    first = next(iter(series.values()))
    order = np.argsort(-first.improvement, kind="stable")
    y = np.arange(len(players))
    h = 0.8 / len(series)
    for i, (name, sv) in enumerate(series.items()):
        ax.barh(y + (i - (len(series) - 1) / 2) * h, sv.improvement[order], height=h, label=name)
    ax.set_yticks(y)
    ax.set_yticklabels([players[k] for k in order], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.6)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("positive = makes the generator better", fontsize=8)


def shapley_bars(
    players: list[str],
    fid_series: dict[str, Any],
    is_series: dict[str, Any],
    samples: dict[int, np.ndarray],
) -> bytes:
    """Two bar charts (one per utility; ``ShapleyValues`` per estimator, drawn by their
    direction-aware ``improvement``) and a strip of generated samples per contributor."""
    plt = _plt()
    n_img = max(len(v) for v in samples.values())
    fig = plt.figure(figsize=(11, 5.6))
    gs = fig.add_gridspec(len(players), 2 + n_img, width_ratios=[4, 4] + [0.55] * n_img)
    _paired_bars(
        fig.add_subplot(gs[:, 0]), players, fid_series, "FID (a loss), sign flipped: lowers FID →"
    )
    ax = fig.add_subplot(gs[:, 1])
    _paired_bars(ax, players, is_series, "Inception Score: raises IS →")
    # one legend for both charts, below them, where it covers no bar
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8, frameon=False)
    fig.text(
        0.72,
        0.99,
        "generated samples per contributor (digit 0 to 9, top to bottom)",
        fontsize=8,
        ha="center",
        va="top",
    )
    for r, (_, imgs) in enumerate(sorted(samples.items())):
        for c, im in enumerate(imgs):
            _img(fig.add_subplot(gs[r, 2 + c]), im)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return figure_png(fig)


def bars(names: list[str], values: Any, xlabel: str) -> bytes:
    """A horizontal bar chart."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.32 * len(names) + 1))
    ax.barh(np.arange(len(names)), np.asarray(values, dtype=float), color="#4c72b0")
    ax.set_yticks(np.arange(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    return figure_png(fig)


def topk_grid(
    gen: np.ndarray, train: np.ndarray, topk: np.ndarray, weights: np.ndarray, show: int = 6
) -> bytes:
    """Each row: a generated image, then its ``show`` best training contributors."""
    plt = _plt()
    rows, cols = len(gen), 1 + show
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.3 * rows), squeeze=False)
    for r in range(rows):
        _img(axes[r, 0], gen[r], "generated")
        for c in range(show):
            _img(axes[r, 1 + c], train[topk[r, c]], f"#{topk[r, c]} w={weights[r, c]:.2f}")
    fig.tight_layout()
    return figure_png(fig)


def xda_grid(examples: list[tuple]) -> bytes:
    """Per test digit: the image and its XDA heatmap, then 3 proponents and 3 opponents.

    ``examples``: tuples ``(test_image, test_heatmap, train_images, tau, train_heatmaps)``
    with 6 training images (3 proponents, then 3 opponents); heatmaps are (C, H, W).
    """
    plt = _plt()
    cols = 2 + 6
    fig, axes = plt.subplots(
        2 * len(examples), cols, figsize=(1.2 * cols, 2.6 * len(examples)), squeeze=False
    )
    for e, (x, test_map, train_imgs, tau, train_maps) in enumerate(examples):
        r = 2 * e
        # each row says what it holds: images above, their XDA heatmaps below
        _img(axes[r, 0], x, f"test digit {e + 1}")
        axes[r, 0].set_ylabel("images", fontsize=8)
        _heat(axes[r, 1], test_map, "XDA (test)")
        axes[r + 1, 0].axis("off")
        axes[r + 1, 1].axis("off")
        axes[r + 1, 1].text(
            1.0,
            0.5,
            f"test digit {e + 1}:\nXDA heatmaps of\nthe training\nimages above →",
            fontsize=7,
            ha="right",
            va="center",
            transform=axes[r + 1, 1].transAxes,
        )
        for c in range(6):
            kind = "proponent" if c < 3 else "opponent"
            _img(axes[r, 2 + c], train_imgs[c], f"{kind} τ={tau[c]:.2g}")
            _heat(axes[r + 1, 2 + c], train_maps[c], "XDA (train)")
    fig.tight_layout()
    return figure_png(fig)


def _heat(ax, heatmap: np.ndarray, title: str) -> None:
    hm = np.asarray(heatmap).sum(0) if np.ndim(heatmap) == 3 else np.asarray(heatmap)
    lim = float(np.abs(hm).max()) + 1e-12
    _img(ax, hm, title, cmap="bwr", vmin=-lim, vmax=lim)


def mislabel_curve(self_influence: np.ndarray, is_mislabeled: np.ndarray) -> bytes:
    """Fraction of mislabeled points found when checking in decreasing self-influence order."""
    plt = _plt()
    order = np.argsort(-np.asarray(self_influence), kind="stable")
    found = np.cumsum(np.asarray(is_mislabeled)[order]) / max(1, int(np.sum(is_mislabeled)))
    checked = np.arange(1, len(order) + 1) / len(order)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.plot(checked, found, label="DualDA self-influence")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="random")
    ax.set_xlabel("fraction of training data checked")
    ax.set_ylabel("fraction of flipped labels found")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)
