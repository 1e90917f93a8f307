"""The YAML recipe of ``fairfix run``: its schema, and checks that name the file, the line and the key.

A recipe is validated against :data:`SCHEMA` before anything runs; an error names
the file, the line and the key (unknown keys get a "did you mean").  Relative paths
are resolved against the recipe's folder.  The pipeline that runs a recipe is
:mod:`fairfix.recipes`; the record of finished steps, :mod:`fairfix.recipe_state`.
"""

from __future__ import annotations

import difflib
import os
import re
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


def _groups(data: dict[str, Any]) -> list[str]:
    """``data.group`` as a list (one column, or several corrected in turn)."""
    group = data.get("group")
    return [str(g) for g in group] if isinstance(group, list) else ([] if group is None else [group])
