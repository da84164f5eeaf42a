"""How good a ranking of customers is at finding the ones who leave.

Plain Python on purpose: the backtest reports these next to baselines, and the
numbers must be reproducible from the JSON output by anyone with a calculator.
"""

from __future__ import annotations

from collections.abc import Sequence


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Probability that a random positive outranks a random negative (ties count half).

    None when either class is empty. Mann-Whitney form with average ranks, O(n log n).
    """
    if len(labels) != len(scores):
        raise ValueError("labels and scores differ in length")
    positives = sum(1 for y in labels if y)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        average = (i + j) / 2 + 1  # ranks are 1-based
        rank_sum += average * sum(1 for k in order[i : j + 1] if labels[k])
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def precision_at(labels: Sequence[bool], scores: Sequence[float], share: float) -> float | None:
    """Share of positives among the top ``share`` of customers by score.

    Ties at the cut are broken by input order, which callers make deterministic.
    """
    count = round(len(scores) * share)
    if count <= 0:
        return None
    top = sorted(range(len(scores)), key=lambda k: -scores[k])[:count]
    return sum(1 for k in top if labels[k]) / count


def precision_recall(labels: Sequence[bool], chosen: Sequence[bool]) -> tuple[float | None, float]:
    """Precision and recall of flagging the ``chosen`` customers as positives."""
    flagged = sum(1 for c in chosen if c)
    hits = sum(1 for y, c in zip(labels, chosen, strict=True) if y and c)
    positives = sum(1 for y in labels if y)
    precision = hits / flagged if flagged else None
    return precision, (hits / positives if positives else 0.0)
