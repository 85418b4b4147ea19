"""DualDA on Hugging Face inputs: a tiny BERT classifier built in the test (no download),
a ``datasets.Dataset`` and a DataLoader of dicts as training data, ``ModelOutput`` outputs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from datacredit import DualDA  # noqa: E402


@pytest.fixture(scope="module")
def tiny_bert():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
    )
    model = transformers.BertForSequenceClassification(cfg).eval()
    g = torch.Generator().manual_seed(0)
    n, length = 60, 8
    ids = torch.randint(1, 40, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[::3, 6:] = 0  # some padding
    labels = torch.arange(n) % 3
    yield model, ids, mask, labels
    torch.set_num_threads(threads)


def _pooled(model, ids, mask):
    """Independent features: BERT's pooler output (the classifier's input; dropout off)."""
    with torch.no_grad():
        return model.bert(input_ids=ids, attention_mask=mask).pooler_output.double().numpy()


def _check(dd, model, ids, mask, labels):
    f = _pooled(model, ids, mask)
    lam = dd.dual_coef_rows(np.arange(len(labels)))
    test = {"input_ids": ids[:5], "attention_mask": mask[:5]}
    tau = dd.attribute(test, targets=2)
    ref = (f[:5] @ f.T) * lam[:, 2][None, :]
    np.testing.assert_allclose(tau, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    # conservation: sum_i tau + bias = surrogate logit W f + b
    logits = dd.surrogate_logits(test)
    np.testing.assert_allclose(
        tau.astype(np.float64).sum(1) + dd.bias[2], logits[:, 2], rtol=1e-4, atol=1e-5
    )


def test_dataloader_of_dicts_and_model_output(tiny_bert):
    model, ids, mask, labels = tiny_bert
    from torch.utils.data import DataLoader, Dataset

    class Dicts(Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return {"input_ids": ids[i], "attention_mask": mask[i], "labels": labels[i]}

    loader = DataLoader(Dicts(), batch_size=16, shuffle=False)
    dd = DualDA(model, loader, layer="classifier", C=0.1, progress=False, batch_size=16).fit()
    assert dd.n_classes == 3 and dd.n_train == 60
    np.testing.assert_array_equal(dd.train_labels, labels.numpy())
    _check(dd, model, ids, mask, labels)


def test_hf_datasets_dataset(tiny_bert, tmp_path):
    datasets = pytest.importorskip("datasets")
    model, ids, mask, labels = tiny_bert
    ds = datasets.Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": mask.tolist(),
            "label": labels.tolist(),
            "text": [f"sample {i}" for i in range(len(labels))],  # a non-tensor column
        }
    )
    dd = DualDA(
        model, ds, layer="classifier", C=0.1, progress=False, batch_size=16, cache_dir=tmp_path
    )
    dd.fit()
    np.testing.assert_array_equal(dd.train_labels, labels.numpy())
    _check(dd, model, ids, mask, labels)
    # the cache key covers the dict columns: a reload hits, a changed token misses
    again = DualDA(
        model, ds, layer="classifier", C=0.1, progress=False, batch_size=16, cache_dir=tmp_path
    )
    assert again.fit().loaded_from_cache
    ids2 = ids.clone()
    ids2[0, 0] = (ids2[0, 0] % 39) + 1
    ds2 = ds.remove_columns("input_ids").add_column("input_ids", ids2.tolist())
    other = DualDA(
        model, ds2, layer="classifier", C=0.1, progress=False, batch_size=16, cache_dir=tmp_path
    )
    assert not other.fit().loaded_from_cache
