"""Classification metrics against hand computations."""

import numpy as np
import pytest

from fedsim.measures.metrics import classification_metrics, confusion_matrix, per_class, spread

Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
Y_PRED = [0, 1, 0, 1, 2, 2, 2, 0, 2, 1]


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(np.array(Y_TRUE), np.array(Y_PRED), 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [1, 1, 3]]
    pc = per_class(cm)
    assert pc["tp"].tolist() == [2, 1, 3]
    assert pc["fp"].tolist() == [1, 2, 1]
    assert pc["fn"].tolist() == [1, 1, 2]
    assert pc["tn"].tolist() == [6, 6, 4]


def test_precision_recall_f1_fbeta_by_hand():
    m = classification_metrics(confusion_matrix(np.array(Y_TRUE), np.array(Y_PRED), 3), beta=2.0)
    p = [2 / 3, 1 / 3, 3 / 4]
    r = [2 / 3, 1 / 2, 3 / 5]
    f1 = [2 * a * b / (a + b) for a, b in zip(p, r)]
    f2 = [5 * a * b / (4 * a + b) for a, b in zip(p, r)]
    support = [3, 2, 5]
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["precision_macro"] == pytest.approx(np.mean(p))
    assert m["recall_macro"] == pytest.approx(np.mean(r))
    assert m["f1_macro"] == pytest.approx(np.mean(f1))
    assert m["fbeta_macro"] == pytest.approx(np.mean(f2))
    assert m["precision_weighted"] == pytest.approx(np.dot(p, support) / 10)
    assert m["recall_weighted"] == pytest.approx(np.dot(r, support) / 10)
    assert m["f1_weighted"] == pytest.approx(np.dot(f1, support) / 10)


def test_zero_division_is_zero_and_absent_classes_do_not_count():
    # class 2 never occurs nor is predicted: macro averages over classes 0 and 1 only
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([0, 0, 0]), 3)
    m = classification_metrics(cm)
    assert m["precision_macro"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["recall_macro"] == pytest.approx((1 + 0) / 2)


def test_spread_worst_decile():
    s = spread([0.1 * i for i in range(1, 21)])
    assert s["mean"] == pytest.approx(1.05)
    assert s["worst10"] == pytest.approx((0.1 + 0.2) / 2)
    assert s["min"] == pytest.approx(0.1) and s["max"] == pytest.approx(2.0)
    assert s["std"] == pytest.approx(np.std([0.1 * i for i in range(1, 21)]))
