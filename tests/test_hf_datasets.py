"""Hugging Face ``datasets.Dataset`` inputs wherever a torch Dataset is accepted: GMValuator
(and its encoders), DualDA and the shared readers, with tiny in-memory ``Dataset.from_dict``
datasets (image + label columns, ``with_format("torch")``, a user transform)."""

from __future__ import annotations

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")
torch = pytest.importorskip("torch")
PIL = pytest.importorskip("PIL.Image")

from datacredit import DualDA, GMValuator  # noqa: E402
from datacredit.models._data import batches, data_len, hf_input_column, take  # noqa: E402

RNG = np.random.default_rng(0)
IMAGES = RNG.random((24, 1, 6, 6)).astype(np.float32)  # NCHW in [0, 1]
LABELS = np.arange(24) % 3
UINT8_HWC = (RNG.random((24, 6, 6, 3)) * 255).astype(np.uint8)


def _pil_dataset():
    imgs = [PIL.fromarray(a) for a in UINT8_HWC]
    ds = datasets.Dataset.from_dict({"image": imgs, "label": LABELS.tolist()})
    return ds.cast_column("image", datasets.Image())


def _array_dataset():
    return datasets.Dataset.from_dict({"image": IMAGES.tolist(), "label": LABELS.tolist()})


def test_readers_take_the_image_column():
    ds = _array_dataset()
    assert hf_input_column(ds) == "image" and data_len(ds, "d") == 24
    np.testing.assert_array_equal(take(ds, np.array([3, 1])), IMAGES[[3, 1]])
    got = take(ds.with_format("torch"), np.array([3, 1]))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), IMAGES[[3, 1]])
    np.testing.assert_array_equal(np.concatenate(list(batches(ds, 10, "d"))), IMAGES)
    pil = take(_pil_dataset(), np.array([0, 5]))
    assert len(pil) == 2 and np.array_equal(np.asarray(pil[1]), UINT8_HWC[5])
    # a sole non-label column is the sample column; two candidates are an error naming them
    other = datasets.Dataset.from_dict({"pixels": IMAGES[:2].tolist(), "label": [0, 1]})
    assert hf_input_column(other) == "pixels"
    two = datasets.Dataset.from_dict({"a": [1, 2], "b": [3, 4]})
    with pytest.raises(ValueError, match="sample column named one of"):
        take(two, np.array([0]))


@pytest.mark.parametrize(
    "make",
    [_array_dataset, lambda: _array_dataset().with_format("torch")],
    ids=["lists", "torch-format"],
)
def test_gmvaluator_on_an_hf_dataset_equals_the_array(make):
    gen = np.clip(IMAGES[:5] + 0.05, 0, 1).astype(np.float32)
    ref = (
        GMValuator(encoder="pixels", k=4, recall=10, index="exact", progress=False)
        .fit(IMAGES)
        .value(gen)
    )
    got = (
        GMValuator(encoder="pixels", k=4, recall=10, index="exact", progress=False)
        .fit(make())
        .value(gen)
    )
    np.testing.assert_array_equal(got.topk_indices, ref.topk_indices)
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-6, atol=1e-7)


def test_gmvaluator_on_pil_images_in_an_hf_dataset():
    # PIL images go through models/images.py's one convention: uint8 HWC -> [0, 1] NCHW.
    ref_x = UINT8_HWC.transpose(0, 3, 1, 2)
    gen = ref_x[:4]
    ref = (
        GMValuator(encoder="pixels", k=3, recall=10, index="exact", progress=False)
        .fit(ref_x)
        .value(gen)
    )
    got = GMValuator(encoder="pixels", k=3, recall=10, index="exact", progress=False)
    got = got.fit(_pil_dataset()).value(gen)
    np.testing.assert_array_equal(got.topk_indices, ref.topk_indices)


def _classifier():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(36, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    ).eval()


def test_dualda_on_an_hf_dataset_equals_the_tensor_pair():
    model = _classifier()
    x, y = torch.from_numpy(IMAGES), torch.from_numpy(LABELS)
    ref = DualDA(model, (x, y), layer="3", C=0.1, progress=False).fit()
    test = x[:4]
    for ds in (_array_dataset(), _array_dataset().with_format("torch")):
        dd = DualDA(model, ds, layer="3", C=0.1, progress=False, batch_size=7).fit()
        np.testing.assert_array_equal(dd.train_labels, LABELS)
        np.testing.assert_allclose(dd.attribute(test), ref.attribute(test), rtol=1e-5, atol=1e-6)


def test_dualda_keeps_the_users_transform():
    # PIL images + the user's own preprocessing (with_transform): the transform is applied,
    # not replaced by with_format("torch") (which would hand the model raw uint8 images).
    def to_input(batch):
        img = np.stack([np.asarray(im, dtype=np.float32)[..., 0] / 255.0 for im in batch["image"]])
        return {
            "image": torch.from_numpy(img[:, None, :, :]),
            "label": torch.tensor(batch["label"]),
        }

    model = _classifier()
    ds = _pil_dataset().with_transform(to_input)
    x = torch.from_numpy(UINT8_HWC[..., :1].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    ref = DualDA(model, (x, torch.from_numpy(LABELS)), layer="3", C=0.1, progress=False).fit()
    dd = DualDA(model, ds, layer="3", C=0.1, progress=False, batch_size=5).fit()
    np.testing.assert_allclose(dd.attribute(x[:3]), ref.attribute(x[:3]), rtol=1e-5, atol=1e-6)
