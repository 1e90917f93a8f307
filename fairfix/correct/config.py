"""The correction's options: one dataclass, checked on creation (imports nothing of ``correct/``).

The budget is counted in optimizer steps (DESIGN.md section 1, step 6): ``steps`` batches of
``batch_size`` rows whatever the table's size, the guard's candidates every ``eval_every``
steps.  Evidence for the guard (step 5): ``folds`` cross-fitted folds by default, or a plain
split when ``val_fraction`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass

from fairfix import errors

#: Strengths of the adapter swept by the guard: the LoRA update is scaled by this factor
#: (saved into the PEFT config as lora_alpha * strength, so PEFT tools load the same model).
STRENGTHS = (0.1, 0.25, 0.5, 0.75, 1.0)
#: What the adapter is trained with: FairNet's triplet, the cell-balanced task loss on the frozen
#: head (fairfix's extension), or both (measured in docs/results.md, "objective ablation").
OBJECTIVES = ("both", "triplet", "task")
#: How every (group, class) cell of the corrected rows weighs alike in a step: batches drawn
#: cell-balanced ("sample"), or uniform batches with cell-balanced loss weights ("weight").
BALANCES = ("sample", "weight")


@dataclass
class CorrectConfig:
    """Options of the correction (recorded in the bundle)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] | None = None
    #: Triplet margin, on L2-normalised representations when ``normalize`` (distances in [0, 2]).
    margin: float = 0.5
    distance: str = "euclidean"
    normalize: bool = True
    #: "auto": correct every group that holds an under-served (group, class) cell (the minority,
    #: and the rest when a class is served worse there than in the minority); "minority": the
    #: minority alone, as the paper.
    groups: str = "auto"
    objective: str = "both"
    #: Weight of the task loss beside the triplet when ``objective`` is "both".
    ce_weight: float = 1.0
    balance: str = "sample"
    train_on: str = "flagged"
    #: The adapter's budget in optimizer steps (independent of the table's size).
    steps: int = 400
    #: The guard's candidates: the adapter after every ``eval_every`` steps.
    eval_every: int = 50
    #: Older budget in epochs over the corrected rows; when set it is turned into steps
    #: (``epochs * ceil(rows / batch_size)``, at least ``eval_every``) and ``steps`` is ignored.
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 3e-3
    tau: float | None = None
    strengths: tuple[float, ...] = STRENGTHS
    max_accuracy_drop: float = 0.0
    #: The guard's margin in standard errors of the paired per-row accuracy change (a setting
    #: passes when gain - guard_se * se >= -max_accuracy_drop).
    guard_se: float = 1.0
    #: The worst-group gain's lower bound, in standard normal units: a one-sided band at
    #: Phi(guard_wga_se) over every candidate at once (1: 84%, as guard_se) must stay above zero.
    guard_wga_se: float = 1.0
    #: Cross-fitted folds for the guard's evidence (every row judged once by an adapter that
    #: did not train on it); ignored when ``val_fraction`` is set.
    folds: int = 5
    #: A plain split instead of cross-fitting: this share of DATA is held out for the guard.
    val_fraction: float | None = None
    #: Paired bootstrap resamples behind the worst-group gain's lower bound.
    guard_bootstrap: int = 400
    seed: int = 0

    def __post_init__(self) -> None:
        self.strengths = tuple(self.strengths)
        checks = {
            "rank": self.rank >= 1, "alpha": self.alpha > 0, "dropout": 0 <= self.dropout < 1,
            "margin": self.margin >= 0, "ce_weight": self.ce_weight >= 0,
            "objective": self.objective in OBJECTIVES, "balance": self.balance in BALANCES,
            "steps": self.steps >= 1, "eval_every": self.eval_every >= 1,
            "epochs": self.epochs is None or self.epochs >= 1,
            "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
            "max_accuracy_drop": 0 <= self.max_accuracy_drop < 1,
            "val_fraction": self.val_fraction is None or 0 < self.val_fraction < 1,
            "folds": 2 <= self.folds <= 20, "guard_bootstrap": 50 <= self.guard_bootstrap <= 100_000,
            "guard_se": 0 <= self.guard_se <= 10, "guard_wga_se": 0 <= self.guard_wga_se <= 10,
            "distance": self.distance in ("euclidean", "cosine"),
            "train_on": self.train_on in ("minority", "flagged"),
            "groups": self.groups in ("auto", "minority"),
            "tau": self.tau is None or 0 <= self.tau <= 1,
            "strengths": len(self.strengths) >= 1 and all(0 < x <= 1 for x in self.strengths),
        }
        errors.check_options("correction", self, checks)

    def budget(self, rows: int) -> int:
        """Optimizer steps for an adapter trained on ``rows`` rows."""
        if self.epochs is None:
            return self.steps
        return max(self.eval_every, self.epochs * -(-rows // self.batch_size))

    @property
    def weights(self) -> tuple[float, float]:
        """(triplet weight, task-loss weight) of the objective."""
        return {"both": (1.0, self.ce_weight), "triplet": (1.0, 0.0), "task": (0.0, 1.0)}[self.objective]
