"""Classification, binary and multi-label meters: hand-computed values, scikit-learn, edge cases."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn import metrics as skm

from mtlkit.metrics import BinaryMeter, ClassificationMeter, MultilabelMeter

# six samples, three classes: probabilities (given to the meter as log-probabilities, i.e. logits) and labels
PROBS = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.3, 0.45, 0.25],
                      [0.6, 0.1, 0.3]])
LABELS = torch.tensor([0, 1, 1, 2, 2, 0])


def logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p / (1 - p))


def test_multiclass_by_hand() -> None:
    m = ClassificationMeter(3)
    m.update(PROBS[:4].log(), LABELS[:4])
    m.update(PROBS[4:].log(), LABELS[4:])
    out = m.compute()
    # predictions 0 1 0 2 1 0: four right
    assert out["accuracy"] == pytest.approx(4 / 6)
    # F1 per class: 0: tp 2 fp 1 fn 0 -> 4/5; 1: tp 1 fp 1 fn 1 -> 1/2; 2: tp 1 fp 0 fn 1 -> 2/3
    assert out["macro_f1"] == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)
    # one-vs-rest AUROC (positive-negative pairs won): class 0 all, class 1 7 of 8, class 2 6 of 8
    assert out["auroc"] == pytest.approx((1 + 7 / 8 + 6 / 8) / 3)
    assert set(out) == set(ClassificationMeter.directions) and all(ClassificationMeter.directions.values())


def test_multiclass_matches_sklearn_over_batches() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 5, generator=g) * 2
    labels = torch.randint(0, 5, (300,), generator=g)
    m = ClassificationMeter(5)
    for chunk in range(0, 300, 64):
        m.update(logits[chunk : chunk + 64], labels[chunk : chunk + 64])
    out = m.compute()
    probs = logits.softmax(1).numpy()
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(labels, probs.argmax(1)))
    assert out["macro_f1"] == pytest.approx(skm.f1_score(labels, probs.argmax(1), average="macro"))
    assert out["auroc"] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class="ovr"), abs=1e-6)


def test_class_absent_from_split() -> None:
    # class 3 never occurs and is never predicted; class 2 is predicted once but never occurs
    logits = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0], [3.0, 0, 0, 0], [0, 2.0, 1.0, 0]])
    labels = torch.tensor([0, 1, 1, 0, 1])
    m = ClassificationMeter(4)
    m.update(logits, labels)
    out = m.compute()
    pred = logits.argmax(1)
    # macro-F1 over the classes seen or predicted (scikit-learn's default labels): 0, 1 and 2 (F1 0)
    assert out["macro_f1"] == pytest.approx(skm.f1_score(labels, pred, average="macro"))
    assert out["macro_f1"] == pytest.approx((1 + 0.8 + 0) / 3)
    # AUROC over the classes with positives and negatives (0 and 1); scikit-learn refuses the whole split
    probs = logits.softmax(1)
    per_class = [skm.roc_auc_score(labels == c, probs[:, c]) for c in (0, 1)]
    assert out["auroc"] == pytest.approx(sum(per_class) / 2)
    # every label the same class: AUROC undefined for all -> NaN, accuracy still defined
    m = ClassificationMeter(3)
    m.update(torch.tensor([[2.0, 0, 0], [0, 2.0, 0]]), torch.tensor([0, 0]))
    out = m.compute()
    assert out["accuracy"] == pytest.approx(0.5) and math.isnan(out["auroc"])


def test_ignore_index_and_dense_inputs() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    labels = torch.randint(0, 3, (2, 4, 5), generator=g)
    labels[0, 0] = -100
    dense = ClassificationMeter(3)
    dense.update(logits, labels)
    flat_logits = logits.movedim(1, -1).reshape(-1, 3)
    flat_labels = labels.reshape(-1)
    keep = flat_labels != -100
    flat = ClassificationMeter(3)
    flat.update(flat_logits[keep], flat_labels[keep])
    assert dense.compute() == pytest.approx(flat.compute())
    assert dense.compute()["accuracy"] == pytest.approx(
        (flat_logits[keep].argmax(1) == flat_labels[keep]).double().mean().item()
    )


def test_nothing_seen_gives_nan() -> None:
    for m in (ClassificationMeter(3), BinaryMeter(), MultilabelMeter(2)):
        assert all(math.isnan(v) for v in m.compute().values())
    m = ClassificationMeter(3)
    m.update(torch.randn(2, 3), torch.tensor([-100, -100]))
    assert all(math.isnan(v) for v in m.compute().values())


BIN_LOGITS = torch.tensor([2.0, -1.0, 0.5, -3.0, -0.5, -0.2])
BIN_TARGETS = torch.tensor([1, 0, 0, 0, 1, 0])


def test_binary_by_hand() -> None:
    m = BinaryMeter()
    m.update(BIN_LOGITS.view(-1, 1), BIN_TARGETS)  # (N, 1) head output against (N,) targets
    out = m.compute()
    # predicted 1 0 1 0 0 0: tp 1, fp 1, fn 1, tn 3
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["f1"] == pytest.approx(2 / 4)
    assert out["macro_f1"] == pytest.approx((2 / 4 + 6 / 8) / 2)  # the negative class: tp 3, fp 1, fn 1
    assert out["auroc"] == pytest.approx(6 / 8)  # positives 2 and -0.5 against four negatives
    assert set(out) == set(BinaryMeter.directions)


def test_binary_matches_sklearn_and_threshold() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(200, generator=g)
    targets = (torch.rand(200, generator=g) < torch.sigmoid(logits)).long()
    for threshold in (0.5, 0.3):
        m = BinaryMeter(threshold=threshold)
        m.update(logits[:77], targets[:77])
        m.update(logits[77:], targets[77:])
        out = m.compute()
        pred = (torch.sigmoid(logits) > threshold).long()
        assert out["accuracy"] == pytest.approx(skm.accuracy_score(targets, pred))
        assert out["f1"] == pytest.approx(skm.f1_score(targets, pred))
        assert out["macro_f1"] == pytest.approx(skm.f1_score(targets, pred, average="macro"))
        assert out["auroc"] == pytest.approx(skm.roc_auc_score(targets, logits), abs=1e-6)


def test_binary_single_class_split_and_ignore() -> None:
    m = BinaryMeter()
    m.update(torch.tensor([1.0, -1.0, 2.0, 0.3]), torch.tensor([1, 1, -100, 1]))
    out = m.compute()
    assert math.isnan(out["auroc"])  # no negatives: undefined
    assert out["accuracy"] == pytest.approx(2 / 3)  # the ignored sample does not count
    assert out["f1"] == pytest.approx(skm.f1_score([1, 1, 1], [1, 0, 1]))
    assert out["macro_f1"] == pytest.approx(skm.f1_score([1, 1, 1], [1, 0, 1], average="macro"))


def test_multilabel_by_hand_label_without_positives_left_out() -> None:
    probs = torch.tensor([[0.9, 0.1, 0.3], [0.8, 0.4, 0.2], [0.7, 0.35, 0.6], [0.6, 0.8, 0.1]])
    targets = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]])
    m = MultilabelMeter(3)
    m.update(logit(probs), targets)
    out = m.compute()
    # AP label 0: ranks 1 and 3 positive -> (1 + 2/3) / 2; label 1: ranks 1 and 4 -> (1 + 2/4) / 2; label 2: none
    assert out["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + (1 + 2 / 4) / 2) / 2)
    assert out["auroc"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert set(out) == set(MultilabelMeter.directions)


def test_multilabel_matches_sklearn_with_ignored_entries() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(120, 4, generator=g)
    targets = (torch.rand(120, 4, generator=g) < torch.sigmoid(logits)).long()
    targets[:10, 2] = -100  # label 2 unknown for the first ten samples
    m = MultilabelMeter(4)
    m.update(logits[:50], targets[:50])
    m.update(logits[50:], targets[50:])
    out = m.compute()
    aps, aucs = [], []
    for j in range(4):
        keep = targets[:, j] != -100
        aps.append(skm.average_precision_score(targets[keep, j], logits[keep, j]))
        aucs.append(skm.roc_auc_score(targets[keep, j], logits[keep, j]))
    assert out["mAP"] == pytest.approx(sum(aps) / 4, abs=1e-6)
    assert out["auroc"] == pytest.approx(sum(aucs) / 4, abs=1e-6)


def test_binned_auroc_is_close_to_exact() -> None:
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(500, 3, generator=g)
    labels = torch.randint(0, 3, (500,), generator=g)
    exact, binned = ClassificationMeter(3), ClassificationMeter(3, auroc_thresholds=1000)
    exact.update(logits, labels)
    binned.update(logits, labels)
    assert binned.compute()["auroc"] == pytest.approx(exact.compute()["auroc"], abs=2e-3)
