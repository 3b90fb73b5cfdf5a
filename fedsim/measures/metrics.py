"""Classification metrics from a confusion matrix, and the spread of per-client values.

Everything derives from the confusion matrix ``C`` (rows: true class, columns:
predicted class), so one pass over the predictions gives every number:

* per class: TP = C_kk, FP = sum_i C_ik - C_kk, FN = sum_j C_kj - C_kk,
  TN = N - TP - FP - FN;
* precision_k = TP/(TP+FP), recall_k = TP/(TP+FN) (0 when the denominator is 0,
  scikit-learn's ``zero_division=0``);
* F-beta_k = (1+b^2) P R / (b^2 P + R), F1 is b = 1;
* macro = unweighted mean over classes that occur in the labels or the predictions;
  weighted = mean weighted by the class support (row sums).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch


def confusion_matrix(
    y_true: torch.Tensor | np.ndarray, y_pred: torch.Tensor | np.ndarray, num_classes: int
) -> np.ndarray:
    """int64 (K, K) matrix, rows = true class, columns = predicted class."""
    t = torch.as_tensor(y_true).reshape(-1).to(torch.int64).cpu()
    p = torch.as_tensor(y_pred).reshape(-1).to(torch.int64).cpu()
    flat = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).numpy().astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """TP, FP, FN, TN, support, precision, recall per class."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "support": cm.sum(axis=1),
        "precision": _safe_div(tp.astype(np.float64), (tp + fp).astype(np.float64)),
        "recall": _safe_div(tp.astype(np.float64), (tp + fn).astype(np.float64)),
    }


def fbeta(precision: np.ndarray, recall: np.ndarray, beta: float) -> np.ndarray:
    b2 = beta * beta
    return _safe_div((1 + b2) * precision * recall, b2 * precision + recall)


def classification_metrics(cm: np.ndarray, beta: float = 2.0) -> dict[str, float]:
    """accuracy, precision/recall/F1/F-beta (macro and weighted) from a confusion matrix."""
    pc = per_class(cm)
    total = int(np.asarray(cm).sum())
    present = (pc["support"] + pc["tp"] + pc["fp"]) > 0  # classes seen in labels or predictions
    weights = pc["support"].astype(np.float64)
    wsum = weights.sum()
    f1 = fbeta(pc["precision"], pc["recall"], 1.0)
    fb = fbeta(pc["precision"], pc["recall"], beta)

    def macro(v: np.ndarray) -> float:
        return float(v[present].mean()) if present.any() else 0.0

    def weighted(v: np.ndarray) -> float:
        return float((v * weights).sum() / wsum) if wsum > 0 else 0.0

    return {
        "accuracy": float(pc["tp"].sum() / total) if total else 0.0,
        "precision_macro": macro(pc["precision"]),
        "recall_macro": macro(pc["recall"]),
        "f1_macro": macro(f1),
        "fbeta_macro": macro(fb),
        "precision_weighted": weighted(pc["precision"]),
        "recall_weighted": weighted(pc["recall"]),
        "f1_weighted": weighted(f1),
        "fbeta_weighted": weighted(fb),
    }


def spread(values: Iterable[float]) -> dict[str, float]:
    """mean, std (population), min, max and the mean of the worst 10% (at least one value).

    "Worst" means lowest: for accuracies. For losses, pass the negated values.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {
            "mean": float("nan"),
            "std": float("nan"),
            "min": float("nan"),
            "max": float("nan"),
            "worst10": float("nan"),
        }
    k = max(1, int(math.ceil(0.1 * v.size)))
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "worst10": float(np.sort(v)[:k].mean()),
    }


def weighted_mean(values: Sequence[float], weights: Sequence[float]) -> float:
    w = np.asarray(weights, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    return float((v * w).sum() / w.sum()) if w.sum() > 0 else float("nan")
