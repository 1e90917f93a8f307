"""FairNet: prototypes, contrastive loss, peft adapter, gated inference, the guard and bundles."""

from fairfix.correct.fairnet import CorrectConfig, CorrectedModel, fit_fairnet
from fairfix.correct.run import correct

__all__ = ["CorrectConfig", "CorrectedModel", "correct", "fit_fairnet"]
