"""XDA on the Hugging Face training-data forms DualDA accepts (dict batches from a DataLoader
or a Dataset, a ``datasets.Dataset``, a model returning a ``ModelOutput``): the heatmaps
equal those of the same model and data given as ``(X, y)`` tensors.  Tiny models are built
here (no download); text token ids have no pixel-space relevance and are refused."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("zennit")
transformers = pytest.importorskip("transformers")
nn = torch.nn

from datacredit import XDA, DualDA  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:the SVM solver stopped:RuntimeWarning")


class PixelCNN(nn.Module):
    """A bias-free ReLU CNN called as ``model(pixel_values)`` that returns a ``ModelOutput``."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * 4 * 4, 10, bias=False),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(10, k)

    def forward(self, pixel_values):
        from transformers.modeling_outputs import ImageClassifierOutput

        return ImageClassifierOutput(logits=self.classifier(self.features(pixel_values)))


class TokenClassifier(nn.Module):
    """Mean of token embeddings under the attention mask, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.classifier = nn.Linear(6, 3)

    def forward(self, input_ids, attention_mask):
        m = attention_mask[..., None].float()
        return self.classifier((self.embed(input_ids) * m).sum(1) / m.sum(1))


@pytest.fixture(scope="module")
def pixels():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n = 48
    x = torch.rand(n, 3, 8, 8)
    y = torch.arange(n) % 3
    x[torch.arange(n), y] += 0.6  # the class lives in one colour channel
    model = PixelCNN()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x).logits, y).backward()
        opt.step()
    model.eval()
    ref = DualDA(model, (x, y), layer="classifier", C=0.05, progress=False, batch_size=16).fit()
    yield model, x, y, ref
    torch.set_num_threads(threads)


class Dicts(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def _explain(dd, test, idx):
    return XDA(dd, composite="EpsilonPlus", batch_size=4).explain(test, idx, target=1)


def _same_as_tensors(dd, ref, x):
    # DualDA fitted on the same features: the same support; the heatmaps are the same
    # forward and backward passes on the same tensors, batch for batch.
    np.testing.assert_array_equal(dd.support, ref.support)
    np.testing.assert_array_equal(dd.dual_coef_rows(ref.support), ref.dual_coef_rows(ref.support))
    idx = ref.support[:6]
    assert idx.size >= 3
    test = x[1] * 0.9
    want = _explain(ref, test, idx)
    got = _explain(dd, test, idx)
    for g, w in zip(got, want):
        assert g.shape == (idx.size, 3, 8, 8)
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    # a dict test input (a batch of one, as the training data gives it) is the same input
    got = _explain(dd, {"pixel_values": test[None], "labels": torch.tensor([1])}, idx)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    # and the heatmaps conserve tau (the check inside XDA, repeated against DualDA itself)
    tau = ref.attribute(test[None], targets=1)[0, idx]
    scale = np.abs(tau).max()
    for maps in want:
        np.testing.assert_allclose(maps.sum((1, 2, 3)).numpy(), tau, atol=5e-3 * scale)


def test_xda_on_a_dataloader_of_dicts_and_model_output(pixels):
    model, x, y, ref = pixels
    loader = torch.utils.data.DataLoader(Dicts(x, y), batch_size=16, shuffle=False)
    dd = DualDA(model, loader, layer="classifier", C=0.05, progress=False, batch_size=16).fit()
    _same_as_tensors(dd, ref, x)


def test_xda_on_a_dataset_of_dicts(pixels):
    model, x, y, ref = pixels
    dd = DualDA(model, Dicts(x, y), layer="classifier", C=0.05, progress=False, batch_size=16)
    _same_as_tensors(dd.fit(), ref, x)


def test_xda_on_a_hf_datasets_dataset(pixels):
    datasets = pytest.importorskip("datasets")
    from datacredit.models.features import select_inputs

    model, x, y, ref = pixels
    features = datasets.Features(
        {
            "pixel_values": datasets.Array3D(shape=(3, 8, 8), dtype="float32"),
            "label": datasets.Value("int64"),
            "text": datasets.Value("string"),  # a non-tensor column
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "pixel_values": x.numpy(),
            "label": y.numpy(),
            "text": [f"sample {i}" for i in range(len(y))],
        },
        features=features,
    )
    back = select_inputs(ds, np.array([5, 0, 7]))
    assert back.dtype == torch.float32 and torch.equal(back, x[[5, 0, 7]])
    dd = DualDA(model, ds, layer="classifier", C=0.05, progress=False, batch_size=16).fit()
    _same_as_tensors(dd, ref, x)


def test_xda_refuses_token_ids_naming_the_argument():
    torch.manual_seed(0)
    ids = torch.randint(0, 20, (30, 5))
    mask = torch.ones(30, 5, dtype=torch.long)
    labels = torch.arange(30) % 3
    model = TokenClassifier().eval()

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return {"input_ids": ids[i], "attention_mask": mask[i], "labels": labels[i]}

    dd = DualDA(model, Tokens(), layer="classifier", C=0.05, progress=False).fit()
    with pytest.raises(TypeError, match=r"dualda\.train_data .*keyword inputs .*input_ids"):
        XDA(dd)
    # token ids as a plain (X, y) pair: integer inputs, refused the same way
    emb = nn.Sequential(nn.Embedding(20, 6), nn.Flatten(), nn.Linear(30, 3)).eval()
    dd = DualDA(emb, (ids, labels), layer="2", C=0.05, progress=False).fit()
    with pytest.raises(TypeError, match=r"dualda\.train_data to be floating-point.*int64"):
        XDA(dd)


def test_xda_refuses_a_loader_whose_positions_are_not_dataset_indices(pixels):
    model, x, y, _ = pixels
    # A sampler that reads the dataset backwards: position i of the loader is dataset[N-1-i],
    # so dataset[i] would explain another sample than DualDA's training index i.
    loader = torch.utils.data.DataLoader(
        Dicts(x, y), batch_size=16, sampler=list(range(len(y)))[::-1]
    )
    dd = DualDA(model, loader, layer="classifier", C=0.05, progress=False, batch_size=16).fit()
    with pytest.raises(ValueError, match="SequentialSampler"):
        XDA(dd)
