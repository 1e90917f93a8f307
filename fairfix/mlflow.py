"""MLflow models: a FairNet bundle (or any fairfix model directory) logged as an MLflow model.

``fairfix.mlflow.log_model(bundle)`` (and ``--mlflow`` on ``fairfix correct`` / ``fairfix run``)
logs the bundle with a ``python_function`` flavour, so that ``mlflow.pyfunc.load_model(uri)
.predict(frame)``, ``mlflow.pyfunc.spark_udf`` and ``mlflow models serve`` give the columns
of ``fairfix predict``: ``score`` (``score_<class>`` per class for multiclass), ``pred`` and,
for a bundle, ``risk`` and ``corrected``.

The logged model is data, never code.  The flavour names a *loader module*
(``loader_module: fairfix.mlflow``): MLflow imports this module from the installed
fairfix package and calls :func:`_load_pyfunc` on the model's data folder; nothing is
pickled or copied as code into the artifact.  Layout (MLflow's own format)::

    MLmodel                     flavours python_function (loader_module fairfix.mlflow) and fairfix
    fairfix/model/              the bundle directory, byte for byte (its fairfix.json hashes every file)
    fairfix/base/               its base model directory (the bundle records the base's sha256)
    input_example.json, serving_input_example.json, requirements.txt, python_env.yaml, conda.yaml

Loading runs fairfix's own checks (every file's sha256 against its manifest, no
unlisted file, the base's sha256 against the bundle's record, no pickle) and then
compares the loaded digests with those recorded in ``MLmodel``: an edited file is
refused with a line that names it (:class:`fairfix.errors.ModelError`).

This module is named like the ``mlflow`` package it uses; every import here is absolute
(``import mlflow`` is the real package).  Nothing here prints.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fairfix import __version__, errors

MLFLOW_MISSING = "--mlflow needs MLflow: pip install 'fairfix[mlflow]'"
#: The folder of the logged model that holds fairfix's data (``model/``, ``base/``).
DATA = "fairfix"
FLAVOR = "fairfix"
#: What the flavour writes as the model's requirements (``--env-manager local`` installs nothing).
REQUIREMENTS = (f"fairfix=={__version__}",)


def import_mlflow() -> Any:
    """The ``mlflow`` package (UsageError naming the extra when it is missing); no telemetry unless asked for."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
    except ImportError as exc:
        raise errors.UsageError(MLFLOW_MISSING) from exc
    return mlflow


def log_model(
    bundle: str | os.PathLike[str],
    *,
    name: str = "model",
    base: str | Path | None = None,
    factory: str | None = None,
    input_example: Any = None,
    threshold: float = 0.5,
    registered_model_name: str | None = None,
) -> Any:
    """Log a fairfix bundle (or model directory) as an MLflow model with a pyfunc flavour.

    Logged to the active MLflow run (one is started when none is active), like
    ``mlflow.pyfunc.log_model``; where runs go is MLflow's own business
    (``MLFLOW_TRACKING_URI``).

    Parameters
    ----------
    bundle
        A bundle from ``fairfix correct`` (its base model is logged beside it), or a
        fairfix model directory.
    name
        The model's name in the run (``runs:/RUN_ID/NAME``).
    base
        The bundle's base model, where its recorded path is not the one to use.
    factory
        The factory (``package.module:function``) of a factory base model; it must be
        importable wherever the MLflow model is loaded.
    input_example
        Rows holding the model's input columns: a pandas DataFrame, or a table fairfix reads
        (a path, ``adult:train``), of which the first 5 rows are kept with their own column
        types (the signature's; MLflow then refuses, say, a double where an integer column
        was given). Default: one row made from the model's own preprocessing (each numeric
        input's training mean as a double, each categorical input's first known value; a
        short text for a text model; zeros for a factory model).
    threshold
        The default of the ``threshold`` parameter of a binary model (``pred`` is the positive
        class where ``score >= threshold``), as ``fairfix predict --threshold``.
    registered_model_name
        Also register the model under this name (MLflow's model registry).

    Returns
    -------
    mlflow.models.model.ModelInfo
        Its ``model_uri`` loads with ``mlflow.pyfunc.load_model``.

    Raises
    ------
    fairfix.errors.UsageError
        MLflow is not installed.
    fairfix.errors.ModelError
        The bundle (or its base) does not load with fairfix's checks.
    """
    from fairfix.models import load_model

    import_mlflow()  # UsageError when MLflow is missing
    # loaded (and its example read) before MLflow creates anything: a bad bundle or table logs nothing
    model = load_model(Path(bundle), base=base, factory=factory)
    example = None if input_example is None else _head(input_example, model.input_columns)
    from mlflow.models import Model as MLModel

    return MLModel.log(artifact_path=None, name=name, flavor=sys.modules[__name__],
                       registered_model_name=registered_model_name, bundle=bundle, base=base, factory=factory,
                       input_example=example, threshold=threshold, loaded=model)


def save_model(
    path: str | os.PathLike[str],
    bundle: str | os.PathLike[str],
    *,
    base: str | Path | None = None,
    factory: str | None = None,
    input_example: Any = None,
    threshold: float = 0.5,
    mlflow_model: Any = None,
    loaded: Any = None,
) -> None:
    """Write the MLflow model of ``bundle`` to the new directory ``path`` (what :func:`log_model` logs).

    The arguments are those of :func:`log_model`; ``mlflow_model`` is MLflow's ``Model``
    being written (MLflow's flavour convention); ``loaded``, the bundle already loaded.
    """
    from fairfix.models import load_model
    from fairfix.predict import checked_threshold

    mlflow = import_mlflow()
    src = Path(bundle)
    # refuses a bad bundle before anything is written
    model = loaded if loaded is not None else load_model(src, base=base, factory=factory)
    threshold = checked_threshold(model, threshold) if model.positive_index is not None else 0.5
    inner = getattr(model, "base", None)
    base_path = inner.path if inner is not None else None
    example = _example(model) if input_example is None else _head(input_example, model.input_columns)
    binary = model.positive_index is not None
    output = FairfixPyfunc(model).predict(example, {"threshold": threshold} if binary else None)
    from mlflow.models import Model as MLModel
    from mlflow.models import infer_signature

    signature = infer_signature(example, output, params={"threshold": float(threshold)} if binary else None)
    mlflow_model = mlflow_model if mlflow_model is not None else MLModel()
    mlflow_model.add_flavor(FLAVOR, fairfix_version=__version__, kind=model.kind, model="model",
                            digest=model.digest, base=_base_name(base_path),
                            base_digest=inner.digest if inner is not None else None, factory=factory,
                            columns=list(output.columns))
    mlflow_model.metadata = {**(mlflow_model.metadata or {}), "fairfix.digest": model.digest}
    with tempfile.TemporaryDirectory(prefix="fairfix-mlflow-") as tmp:
        data = Path(tmp) / DATA
        data.mkdir()
        shutil.copytree(src, data / "model", symlinks=True)
        if base_path is not None:
            if Path(base_path).is_dir():
                shutil.copytree(base_path, data / "base", symlinks=True)
            else:
                (data / "base").mkdir()
                shutil.copy2(base_path, data / "base" / Path(base_path).name)
        mlflow.pyfunc.save_model(
            str(path), loader_module=__name__, data_path=str(data), signature=signature,
            input_example=example, pip_requirements=list(REQUIREMENTS), mlflow_model=mlflow_model,
        )


def _base_name(base_path: Any) -> str | None:
    if base_path is None:
        return None
    p = Path(base_path)
    return "base" if p.is_dir() else f"base/{p.name}"


def _head(data: Any, columns: list[str], rows: int = 5) -> Any:
    """The first ``rows`` rows of ``columns`` of a DataFrame or a table fairfix reads (path, ``adult:train``).

    Read as ``fairfix predict`` reads them, but with each column's own type (an integer column
    stays integer: MLflow's schema then accepts integer inputs).
    """
    import pandas as pd

    from fairfix.models.runner import frame_of
    from fairfix.predict import open_prediction_input

    if isinstance(data, pd.DataFrame):
        missing = [c for c in columns if c not in data.columns]
        if missing:
            raise errors.UsageError(f"input_example: no column {missing[0]!r} (the model reads "
                                    f"{', '.join(map(repr, columns))})")
        return data[columns].head(rows).reset_index(drop=True)
    table = open_prediction_input(data)
    try:
        batch = next(iter(table.iter_batches(columns, batch_rows=rows)), None)
    finally:
        table.close()
    if batch is None:
        raise errors.DataError(f"{table.name}: has a header but no rows")
    return frame_of(batch, columns).head(rows).reset_index(drop=True)


def _example(model: Any) -> Any:
    """One input row made from the model itself (no data needed): means, first known values, a text."""
    import pandas as pd

    inner = getattr(model, "base", model)
    pre = getattr(inner, "pre", None)
    row: dict[str, Any] = {}
    if pre is not None:  # the tabular MLP's preprocessing
        row.update({c: float(m) for c, m in zip(pre.numeric, pre.means, strict=True)})
        row.update({c: (v[0] if v else "") for c, v in zip(pre.categorical, pre.vocabularies, strict=True)})
    elif getattr(inner, "text_column", None) is not None:
        row[inner.text_column] = "an example text"
    for c in model.input_columns:
        row.setdefault(c, 0.0)
    return pd.DataFrame([row])[model.input_columns]


class FairfixPyfunc:
    """The object ``mlflow.pyfunc.load_model`` wraps: ``predict(frame, params)`` gives ``fairfix predict``'s columns.

    Rows are scored in the model's batches (``batch_rows``), from the first row, as
    ``fairfix predict`` scores a table; the columns are those ``fairfix predict`` writes after
    its ``row``/``--id`` column.
    """

    def __init__(self, model: Any):
        self.model = model

    def predict(self, model_input: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Prediction columns for a pandas DataFrame (or anything ``pandas.DataFrame`` takes)."""
        import pandas as pd

        from fairfix.predict import output_columns, predict_frame

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        model = self.model
        given = (params or {}).get("threshold")
        threshold = None if given is None or model.positive_index is None else float(given)
        if len(frame) == 0:
            return pd.DataFrame({c: [] for c in output_columns(model)})
        out = predict_frame(frame.reset_index(drop=True), model, threshold=threshold)
        return out.drop(columns=["row"])


def _load_pyfunc(data_path: str, model_config: Any = None) -> FairfixPyfunc:
    """MLflow's loader-module hook: load ``fairfix/model`` (and ``fairfix/base``) with fairfix's checks.

    Raises
    ------
    fairfix.errors.ModelError
        A file of the logged bundle or base differs from its manifest's sha256 (or is missing,
        or unlisted), or the loaded digests differ from those recorded in ``MLmodel``.
    """
    from fairfix.models import load_model
    from fairfix.models.factory import trusted_factories

    data = Path(data_path)
    flavour = _flavour(next((d for d in data.parents if (d / "MLmodel").is_file()), data.parent))
    base = data / flavour["base"] if flavour.get("base") else None
    factory = flavour.get("factory")
    with trusted_factories(factory):
        model = load_model(data / flavour.get("model", "model"), base=base, factory=factory)
    inner = getattr(model, "base", None)
    for what, loaded, recorded in (("model", model.digest, flavour.get("digest")),
                                   ("base model", inner.digest if inner is not None else None,
                                    flavour.get("base_digest"))):
        if recorded and loaded != recorded:
            raise errors.ModelError(
                f"{data}: the logged {what} has sha256 {str(loaded)[:12]}..., MLmodel records "
                f"{str(recorded)[:12]}...; refusing a different {what}"
            )
    return FairfixPyfunc(model)


def _flavour(root: Path) -> dict[str, Any]:
    """The ``fairfix`` flavour of the MLmodel file in ``root`` (ModelError when it has none)."""
    import yaml

    mlmodel = root / "MLmodel"
    try:
        doc = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
        flavour = doc["flavors"][FLAVOR]
        if not isinstance(flavour, dict):
            raise TypeError("not a mapping")
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise errors.ModelError(f"{mlmodel}: no readable '{FLAVOR}' flavour "
                                f"({' '.join(str(exc).split())[:200]})") from exc
    return flavour
