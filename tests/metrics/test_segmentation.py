"""mIoU from a split-level confusion matrix: hand-computed values, ignore 255, absent classes, pooling."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlkit.metrics import SegmentationMeter, confusion_matrix, iou_per_class, mean_iou

# 8 pixels, 3 classes; one pixel ignored (255).
TARGET = torch.tensor([0, 0, 1, 1, 2, 2, 255, 0])
PRED = torch.tensor([0, 1, 1, 1, 0, 2, 2, 0])
# cm[g, p] by hand: g=0 -> p 0, 1, 0; g=1 -> p 1, 1; g=2 -> p 0, 2 (the 255 pixel is skipped)
CM = torch.tensor([[2, 1, 0], [0, 2, 0], [1, 0, 1]])
# IoU_c = TP / (row + column - TP): 2/(3+3-2), 2/(2+3-2), 1/(2+1-1)
IOU = [2 / 4, 2 / 3, 1 / 2]
MIOU = 100 * sum(IOU) / 3


def test_confusion_matrix_by_hand_skips_ignore() -> None:
    assert torch.equal(confusion_matrix(PRED, TARGET, 3), CM)


def test_iou_and_miou_by_hand() -> None:
    assert iou_per_class(CM).tolist() == pytest.approx(IOU)
    assert mean_iou(CM) == pytest.approx(MIOU)  # 55.56


def test_meter_on_label_maps_and_logits() -> None:
    m = SegmentationMeter(3)
    m.update(PRED.view(1, 2, 4), TARGET.view(1, 2, 4))
    out = m.compute()
    assert out["mIoU"] == pytest.approx(MIOU)
    assert out["pixel_acc"] == pytest.approx(100 * 5 / 7)  # 5 correct of 7 valid pixels

    logits = torch.nn.functional.one_hot(PRED, 3).float().T.reshape(1, 3, 2, 4) * 5.0
    m2 = SegmentationMeter(3)
    m2.update(logits, TARGET.view(1, 2, 4))
    assert m2.compute()["mIoU"] == pytest.approx(MIOU)


def test_absent_class_is_excluded_but_false_positive_class_counts() -> None:
    # a 4th class that is neither predicted nor in the ground truth does not enter the mean
    m = SegmentationMeter(4)
    m.update(PRED, TARGET)
    assert m.compute()["mIoU"] == pytest.approx(MIOU)
    assert math.isnan(iou_per_class(m.state()[0])[3].item())
    # a class only predicted (never true) has IoU 0 and does count
    pred = PRED.clone()
    pred[0] = 3  # was a correct class-0 pixel
    m = SegmentationMeter(4)
    m.update(pred, TARGET)
    # class 0: TP 1, row 3, column 2 -> 1/4; class 3: 0
    expected = 100 * (1 / 4 + 2 / 3 + 1 / 2 + 0) / 4
    assert m.compute()["mIoU"] == pytest.approx(expected)


def test_pooled_over_split_not_mean_of_batches() -> None:
    # image A: perfect on class 0; image B: class 1 all wrong (predicted 0)
    a_t, a_p = torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)
    b_t, b_p = torch.tensor([[1, 1, 0, 0]]), torch.zeros(1, 4, dtype=torch.long)
    m = SegmentationMeter(2)
    m.update(a_p, a_t)
    m.update(b_p, b_t)
    # pooled cm = [[6, 0], [2, 0]]: IoU0 = 6/8, IoU1 = 0 -> 37.5 (per-image mIoU mean would be (100 + 25) / 2)
    assert m.compute()["mIoU"] == pytest.approx(37.5)


def test_reset_and_empty() -> None:
    m = SegmentationMeter(3)
    m.update(PRED, TARGET)
    m.reset()
    assert int(m.state()[0].sum()) == 0
    assert math.isnan(m.compute()["pixel_acc"])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0, 1, 2, 3, 255])), min_size=1, max_size=60),
    st.integers(0, 60),
)
def test_split_batches_and_merged_states_equal_one_update(pixels: list[tuple[int, int]], cut: int) -> None:
    pred = torch.tensor([p for p, _ in pixels])
    target = torch.tensor([t for _, t in pixels])
    cut = min(cut, len(pixels))
    whole = SegmentationMeter(4)
    whole.update(pred, target)
    split = SegmentationMeter(4)
    split.update(pred[:cut], target[:cut])
    split.update(pred[cut:], target[cut:])
    merged, second = SegmentationMeter(4), SegmentationMeter(4)
    merged.update(pred[:cut], target[:cut])
    second.update(pred[cut:], target[cut:])
    reduced = copy.deepcopy(merged)
    merged.merge(second)
    for mine, theirs in zip(reduced.state(), second.state(), strict=True):  # what all_reduce(SUM) does
        mine += theirs
    for m in (split, merged, reduced):
        assert torch.equal(m.state()[0], whole.state()[0])
        assert m.compute() == pytest.approx(whole.compute(), nan_ok=True)
