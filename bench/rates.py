"""Precision and recall of one benchmark run, shared by the zoo and the external-truth benches."""

from __future__ import annotations


class PrecisionRecall:
    """Mixin: a run's ``error``, ``correct``, ``predicted`` and ``truth_units`` → its rates.

    A failed run (``error`` set) scores 0.0 on both; an empty prediction or an empty truth
    scores 1.0 on the rate it leaves undefined.
    """

    error: str
    correct: int
    predicted: int
    truth_units: int

    @property
    def precision(self) -> float:
        """Correct / predicted (1.0 when nothing was predicted; 0.0 when the run failed)."""
        if self.error:
            return 0.0
        return self.correct / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        """Correct / true units (1.0 when there is nothing to find; 0.0 when the run failed)."""
        if self.error:
            return 0.0
        return self.correct / self.truth_units if self.truth_units else 1.0
