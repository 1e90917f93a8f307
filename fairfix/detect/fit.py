"""Fit the bias detector on whatever sensitive labels exist (DESIGN.md section 1, step 1).

Three modes, one training loop:

- ``full``: every row has the sensitive value;
- ``partial``: some rows have it (empty cell / NaN elsewhere); train on those;
- ``none``: no sensitive labels; score rows without supervision (Local Outlier
  Factor on the representation, the base model's own errors, or both) and
  distil those pseudo-labels into the same MLP.

Rows are identified by their position in the table (row id 0..N-1); training
batches carry row ids, and targets -- true or pseudo -- are looked up by row id,
never by position in a shuffled batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fairfix import errors
from fairfix.data.groups import group_values
from fairfix.detect.module import BiasDetector

SCHEMA = "fairfix.detect/1"
ARTIFACT_SCHEMA = "fairfix.detector/1"
WEIGHTS = "detector.safetensors"
MODES = ("auto", "full", "partial", "none")
UNSUPERVISED = ("lof", "errors", "combined")
SWEEP = tuple(round(t, 2) for t in np.linspace(0.05, 0.95, 19))


@dataclass
class DetectorConfig:
    """Options of ``fit_detector`` (stored in the detector's manifest)."""

    mode: str = "auto"
    layer: str | None = None
    hidden: int = 64
    dropout: float = 0.1
    epochs: int = 40
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-4
    holdout: float = 0.2
    seed: int = 0
    unsupervised: str = "lof"  # best AUC of the three on Adult and CelebA (docs/results.md)
    contamination: float = 0.3
    max_unsupervised_rows: int = 20000
    tau: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise errors.UsageError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.unsupervised not in UNSUPERVISED:
            raise errors.UsageError(f"--unsupervised {self.unsupervised!r}: choose one of {', '.join(UNSUPERVISED)}")
        checks = {
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
            "holdout": 0.0 < self.holdout < 1.0, "contamination": 0.0 < self.contamination < 1.0,
            "hidden": self.hidden >= 0, "tau": 0.0 <= self.tau <= 1.0,
        }
        errors.check_options("detector", self, checks)


@dataclass
class Detector:
    """A fitted bias detector and what it was fitted for."""

    module: BiasDetector
    layer: str
    group_column: str | None
    minority: list[Any]
    mode: str
    tau: float
    base: dict[str, Any]
    config: DetectorConfig
    report: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def risk(self, values: torch.Tensor, mask: torch.Tensor | None = None, batch: int = 8192) -> np.ndarray:
        """Risk scores in [0, 1] for representations at ``layer``."""
        out = [self.module.risk(values[i : i + batch], None if mask is None else mask[i : i + batch])
               for i in range(0, len(values), batch)]
        return torch.cat(out).double().numpy() if out else np.zeros(0)

    def to_dict(self) -> dict[str, Any]:
        """The ``fairfix.detect/1`` report (what ``fairfix detect --format json`` prints)."""
        return self.report

    def to_json(self) -> str:
        """The report as ``fairfix detect --format json`` prints it."""
        import json

        return json.dumps(self.report, indent=2, allow_nan=False, default=str) + "\n"

    @classmethod
    def load(cls, path: str | Path, model: Any = None) -> Detector:
        """Load a detector directory (:func:`load_detector`); ``model`` (its base) is checked when given."""
        # the Python API's Model holds the library model (which has a torch ``module``) as ``model``
        return load_detector(path, model if model is None or hasattr(model, "module") else model.model)

    def save(self, out: str | Path, *, force: bool = False) -> dict[str, Any]:
        """Write the detector directory (manifest + safetensors)."""
        from safetensors.torch import save_file

        from fairfix.artifacts import write_artifact

        def write(tmp: Path) -> None:
            state = {k: v.detach().contiguous() for k, v in self.module.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})

        return write_artifact(
            out, kind="detector", schema=ARTIFACT_SCHEMA, write_files=write, force=force,
            config=asdict(self.config),
            extra={
                "detector": {
                    "dim": int(self.module.mean.shape[0]), "hidden": self.config.hidden,
                    "sequence": self.module.sequence, "layer": self.layer,
                    "group_column": self.group_column, "minority": self.minority,
                    "mode": self.mode, "tau": self.tau,
                },
                "base_model": self.base,
                "report": self.report,
            },
        )


def load_detector(path: str | Path, model: Any = None) -> Detector:
    """Load a detector directory; refuse it when ``model`` is not the base it was trained on."""
    from fairfix.artifacts import member, read_manifest
    from fairfix.models.base import build_checked, check_state_dict, load_safetensors

    p = Path(path)
    if not p.exists():
        raise errors.ModelError(f"{p}: no such detector directory")
    manifest = read_manifest(p)
    if manifest["kind"] != "detector":
        raise errors.ModelError(f"{p}: is a fairfix {manifest['kind']}, not a detector")
    mf = p / "fairfix.json"
    d = manifest.get("detector")
    base = manifest.get("base_model", {})
    if not isinstance(d, dict) or not isinstance(base, dict):
        raise errors.ModelError(f"{mf}: not a detector manifest (no 'detector' mapping)")
    if model is not None and base.get("sha256") and model.digest != base["sha256"]:
        raise errors.ModelError(
            f"{p}: trained on base model sha256 {str(base['sha256'])[:12]}..., but {model.path} has "
            f"{str(model.digest)[:12]}...; retrain the detector for this model"
        )
    known = {"dim", "hidden", "sequence", "layer", "group_column", "minority", "mode", "tau"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise errors.ModelError(f"{mf}: unknown key {unknown[0]!r} in 'detector'")
    try:
        dims = (int(d["dim"]), int(d["hidden"]), bool(d["sequence"]), float(manifest["config"].get("dropout", 0.1)))
        if dims[0] < 1 or dims[1] < 0:
            raise ValueError(f"dim {dims[0]}, hidden {dims[1]}")
        cfg = DetectorConfig(**manifest["config"])
        fields = (str(d["layer"]), d["group_column"], list(d["minority"]), str(d["mode"]), float(d["tau"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise errors.ModelError(f"{mf}: bad detector manifest ({type(exc).__name__}: {exc})") from exc
    except errors.FairfixError as exc:
        raise errors.ModelError(f"{mf}: bad detector config ({exc})") from exc
    if WEIGHTS not in manifest["files"]:
        raise errors.ModelError(f"{p / WEIGHTS}: not listed in {mf}")
    # sizes from the manifest are checked against the weights' header before torch allocates them
    module = build_checked(lambda: BiasDetector(*dims), member(p, WEIGHTS), str(p / WEIGHTS))
    state = load_safetensors(member(p, WEIGHTS))
    check_state_dict(module, state, str(p / WEIGHTS))
    module.load_state_dict(state)
    module.eval()
    layer, group_column, minority, mode, tau = fields
    return Detector(module, layer, group_column, minority, mode, tau, base, cfg, manifest.get("report", {}))


# -- choosing rows and targets ------------------------------------------------------


def resolve_mode(frame: Any, group: str | None, mode: str) -> str:
    """``full``/``partial``/``none`` from the data (``auto``), or check the requested mode fits."""
    if group is None:
        if mode in ("full", "partial"):
            raise errors.UsageError(f"--mode {mode} needs a sensitive column (--group COL)")
        return "none"
    if mode == "none":
        return "none"
    missing = int(frame[group].isna().sum())
    n = len(frame)
    if missing == n:
        raise errors.DataError(f"sensitive column {group!r}: all {n} values are missing; use --mode none")
    if mode == "full" and missing:
        raise errors.DataError(
            f"sensitive column {group!r}: --mode full needs a value in every row; {missing} of {n} are "
            "missing (use --mode partial)"
        )
    if mode == "auto":
        return "partial" if missing else "full"
    return mode


def resolve_minority(given: Sequence[Any] | None, distinct: list[Any], group: str) -> list[Any]:
    """Match ``--minority`` values (text from the CLI) to the group's values."""
    from fairfix.metrics.counts import normalize_values

    out = []
    for g in given or []:
        match = [v for v in distinct if v == g or str(v) == str(g) or v == normalize_values([str(g)])[0]]
        if not match:
            raise errors.DataError(
                f"--minority {g!r} does not occur in {group!r}; values: {', '.join(map(repr, distinct))}"
            )
        out.append(match[0])
    if len(set(map(str, out))) == len(distinct):
        raise errors.UsageError(f"--minority names every value of {group!r}; leave at least one majority group")
    return list(dict.fromkeys(out))


def default_minority(frame: Any, rows: np.ndarray, model: Any, label: str, group: str) -> tuple[list[Any], dict]:
    """The group holding the worst (group, label) cell of the base model on ``rows``."""
    import fairfix

    sub = frame.iloc[rows]
    sub = sub[sub[group].notna()]
    report = fairfix.audit(sub, label=label, group=[group], model=model, bootstrap=0)
    worst = report.summary["worst_group"]
    if worst is None:
        raise errors.DataError(f"cannot pick a minority group of {group!r}: no (group, label) cell has rows")
    value = worst["group"][group]
    share = float(np.mean([str(v) == str(value) for v in sub[group]])) if len(sub) else None
    return [value], {"group": worst["group"], "label": worst["label"],
                     "accuracy": report.summary["worst_group_accuracy"], "share": share}


# -- training -----------------------------------------------------------------------


def train_module(
    values: torch.Tensor,
    mask: torch.Tensor | None,
    targets: np.ndarray,
    rows: np.ndarray,
    config: DetectorConfig,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> BiasDetector:
    """Train a detector on ``rows`` (row ids) with ``targets`` indexed by row id.

    Class-balanced BCE on logits (pos_weight = negatives / positives).  The
    global torch RNG is restored afterwards.
    """
    y = torch.as_tensor(targets, dtype=torch.float32)
    train_y = y[torch.as_tensor(rows)]
    pos = float(train_y.sum())
    neg = float(len(rows) - pos)
    if pos == 0 or neg == 0:
        raise errors.DataError("the detector's training rows hold only one class (all minority or none)")
    seq = values.dim() == 3
    flat = values[torch.as_tensor(rows)]
    if seq:
        assert mask is not None  # sequences come with their mask
        keep = mask[torch.as_tensor(rows)].unsqueeze(-1).bool()
        m = keep.float()
        flat = flat.masked_fill(~keep, 0.0)  # padding may hold anything, NaN included
        mean = flat.sum((0, 1)) / m.sum()
        scale = (((flat - mean) ** 2) * m).sum((0, 1)).div(m.sum()).sqrt()
    else:
        mean, scale = flat.mean(0), flat.std(0, unbiased=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        module = BiasDetector(values.shape[-1], config.hidden, seq, config.dropout)
        module.set_standardisation(mean, scale)
        opt = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(neg / pos))
        gen = torch.Generator().manual_seed(config.seed)
        ids = torch.as_tensor(rows)
        for epoch in range(config.epochs):
            module.train()
            perm = ids[torch.randperm(len(ids), generator=gen)]
            total = 0.0
            for start in range(0, len(perm), config.batch_size):
                batch_ids = perm[start : start + config.batch_size]  # row ids, not positions
                logits = module(values[batch_ids], None if mask is None else mask[batch_ids])
                loss = loss_fn(logits, y[batch_ids])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(batch_ids)
            if progress is not None:
                progress(epoch + 1, config.epochs, {"loss": total / len(perm)})
    module.eval()
    return module


def pseudo_scores(
    values: torch.Tensor,
    mask: torch.Tensor | None,
    rows: np.ndarray,
    method: str,
    proba: np.ndarray | None,
    y_idx: np.ndarray | None,
    seed: int,
) -> np.ndarray:
    """Unsupervised minority scores for ``rows`` (higher = more likely minority).

    ``lof``: Local Outlier Factor on the standardised representation;
    ``errors``: 1 - the base model's probability of the true label;
    ``combined``: the mean of both scores' percentile ranks.
    """
    from scipy.stats import rankdata

    def lof() -> np.ndarray:
        from sklearn.neighbors import LocalOutlierFactor

        v = values[torch.as_tensor(rows)]
        if v.dim() == 3:
            assert mask is not None  # sequences come with their mask
            keep = mask[torch.as_tensor(rows)].unsqueeze(-1).bool()
            v = v.masked_fill(~keep, 0.0).sum(1) / keep.sum(1)
        x = v.double().numpy()
        x = (x - x.mean(0)) / np.where(x.std(0) > 1e-9, x.std(0), 1.0)
        est = LocalOutlierFactor(n_neighbors=min(35, len(rows) - 1))
        est.fit(x)
        return -est.negative_outlier_factor_

    def errs() -> np.ndarray:
        if proba is None or y_idx is None:
            raise errors.UsageError("--unsupervised errors/combined needs --label COL (the base model's errors)")
        return 1.0 - proba[rows, y_idx[rows]]

    if method == "lof":
        return lof()
    if method == "errors":
        return errs()
    return (rankdata(lof()) + rankdata(errs())) / (2 * len(rows))


# -- evaluation ---------------------------------------------------------------------


def evaluate(risk: np.ndarray, truth: np.ndarray, groups: np.ndarray, tau: float) -> dict[str, Any]:
    """TPR, FPR, precision, activation rate (overall and per group) at ``tau``, and a sweep."""

    def at(t: float) -> dict[str, float | None]:
        flag = risk > t
        pos, neg = truth == 1, truth == 0
        return {
            "tau": t,
            "tpr": float(flag[pos].mean()) if pos.any() else None,
            "fpr": float(flag[neg].mean()) if neg.any() else None,
            "precision": float(truth[flag].mean()) if flag.any() else None,
            "activation_rate": float(flag.mean()) if len(flag) else None,
        }

    point = at(tau)
    by_group = {str(g): float((risk[groups == g] > tau).mean()) for g in dict.fromkeys(groups.tolist())}
    return {**{k: v for k, v in point.items() if k != "tau"},
            "activation_rate_by_group": dict(sorted(by_group.items())),
            "sweep": [at(t) for t in SWEEP]}


# -- the whole job ------------------------------------------------------------------


def fit_detector(
    data: Any,
    model: Any,
    *,
    group: str | None = None,
    minority: Sequence[Any] | None = None,
    label: str | None = None,
    eval_group: str | None = None,
    config: DetectorConfig | None = None,
    input_format: str | None = None,
    progress: Callable[..., None] | None = None,
) -> Detector:
    """Fit a bias detector for ``model`` on ``data`` (see the module docstring for the modes).

    Parameters
    ----------
    group
        Sensitive column (absent/None for mode none).
    minority
        Disadvantaged group values; by default the group holding the base model's
        worst (group, label) cell on the held-out rows (needs ``label``).
    label
        Label column: for the default minority and the ``errors`` unsupervised signal.
    eval_group
        In mode none, a labeled sensitive column used only to measure TPR/FPR.
    """
    from fairfix.data.frames import read_frame

    config = config or DetectorConfig()
    frame = read_frame(data, None, input_format).reset_index(drop=True)
    for col, what in ((group, "--group"), (label, "--label"), (eval_group, "--eval-group")):
        if col is not None and col not in frame.columns:
            raise errors.DataError(f"{what}: no column {col!r}; columns are: {', '.join(map(repr, frame.columns))}")
    missing_inputs = [c for c in model.input_columns if c not in frame.columns]
    if missing_inputs:
        raise errors.DataError(f"the model reads column {missing_inputs[0]!r}, which the data lacks")
    mode = resolve_mode(frame, group, config.mode)
    truth_col = group if mode != "none" else (eval_group or group)
    layer = config.layer or model.default_tap_layer
    n = len(frame)
    values, mask, proba = _representations(model, frame, layer, progress)
    y_idx = None
    if label is not None:
        from fairfix.data.labels import encode_labels

        if frame[label].isna().any():
            raise errors.DataError(f"label column {label!r} has {int(frame[label].isna().sum())} empty value(s)")
        unknown = set(map(str, frame[label].unique())) - set(map(str, model.classes))
        if unknown:
            raise errors.DataError(f"label value {sorted(unknown)[0]!r} in {label!r} is not a class of the model")
        y_idx = encode_labels(frame[label], model.classes)

    rng = np.random.default_rng(config.seed)
    gvals: np.ndarray = np.full(n, None, dtype=object)
    distinct: list[Any] = []
    if truth_col is not None:
        gvals, distinct = group_values(frame, truth_col)
        if not distinct and truth_col != eval_group:
            # mode none with an all-empty --group (as auto's message suggests): nothing to measure
            truth_col, gvals = None, np.full(n, None, dtype=object)
        elif not distinct:
            raise errors.DataError(f"--eval-group {truth_col!r}: all {n} values are missing")
        elif len(distinct) < 2:
            raise errors.DataError(
                f"sensitive column {truth_col!r} has one value only ({distinct[0]!r}); need at least two"
            )
    labeled = np.flatnonzero(np.array([v is not None for v in gvals]))
    perm = rng.permutation(labeled)
    n_hold = max(1, int(round(len(perm) * config.holdout))) if len(perm) else 0
    holdout, train_rows = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    chosen_by = "--minority"
    worst: dict[str, Any] | None = None
    if truth_col is not None:
        if minority:
            minority_vals = resolve_minority(minority, distinct, truth_col)
        elif label is not None:
            minority_vals, worst = default_minority(frame, holdout, model, label, truth_col)
            chosen_by = "worst (group, label) cell of the base model on held-out rows"
        else:
            raise errors.UsageError("give --minority VALUE, or --label COL to pick the group with the worst cell")
        mset = {str(v) for v in minority_vals}
        truth = np.array([np.nan if v is None else float(str(v) in mset) for v in gvals])
    else:
        minority_vals, truth = [], np.full(n, np.nan)
        chosen_by = "none (no sensitive labels)"

    unsup: dict[str, Any] | None = None
    if mode == "none":
        pool = rng.permutation(n)[: config.max_unsupervised_rows]
        pool = np.sort(pool)
        scores = pseudo_scores(values, mask, pool, config.unsupervised, proba, y_idx, config.seed)
        cut = np.quantile(scores, 1.0 - config.contamination)
        targets = np.full(n, np.nan)
        targets[pool] = (scores >= cut).astype(float)  # joined by row id
        fit_rows = pool
        unsup = {"method": config.unsupervised, "rows_scored": int(len(pool)),
                 "contamination": config.contamination}
    else:
        targets = truth
        fit_rows = train_rows
    module = train_module(values, mask, targets, fit_rows, config,
                          progress=(lambda e, t, m: progress("detector", e, t, m)) if progress else None)
    det = Detector(module, layer, group if mode != "none" else None, minority_vals, mode, config.tau,
                   model.describe(), config)
    report: dict[str, Any] = {
        "schema": SCHEMA, "mode": mode, "group_column": truth_col if mode != "none" else group,
        "labeled_rows": int(len(labeled)) if mode != "none" else 0,
        "train_rows": int(len(fit_rows)), "heldout_rows": int(len(holdout)),
        "minority": minority_vals, "minority_chosen_by": chosen_by, "worst_cell": worst,
        "layer": layer, "tau": config.tau, "unsupervised": unsup,
    }
    if len(holdout) and truth_col is not None:
        r = det.risk(values[torch.as_tensor(holdout)], None if mask is None else mask[torch.as_tensor(holdout)])
        report.update(evaluate(r, truth[holdout], np.array([str(v) for v in gvals[holdout]]), config.tau))
        report["reason"] = None
        if mode == "none":
            report["evaluated_on"] = f"{len(holdout)} held-out rows labeled by {truth_col!r}"
    else:
        r_all = det.risk(values, mask)
        report.update({"tpr": None, "fpr": None, "precision": None,
                       "activation_rate": float((r_all > config.tau).mean()),
                       "activation_rate_by_group": {}, "sweep": [],
                       "reason": "no labeled rows to measure TPR/FPR on; pass --eval-group COL"})
    det.report = report
    return det


def _representations(model: Any, frame: Any, layer: str, progress: Callable[..., None] | None):
    from fairfix.models.runner import collect_representations

    cb = (lambda d, t: progress("representations", d, t, None)) if progress else None
    return collect_representations(model, frame, layer, progress=cb)
