"""The metric engine: confusion counts, rates, bootstrap intervals and gates.

numpy and pyarrow only; nothing here imports torch or pandas.
"""

from fairfix.metrics.counts import ConfusionCounts, CountAccumulator, counts_from_arrays
from fairfix.metrics.gates import Gate, GateResult, parse_gate

__all__ = ["ConfusionCounts", "CountAccumulator", "Gate", "GateResult", "counts_from_arrays", "parse_gate"]
