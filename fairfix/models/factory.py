"""Any torch module built by a user factory, with a state dict, reading numeric columns.

``--factory package.module:function`` names a function that takes no arguments
and returns an ``nn.Module``; fairfix builds it, loads the weights into it
(keys and shapes must match exactly) and feeds it a ``(B, F)`` float32 tensor of
the ``--features`` columns.  The module returns logits ``(B, C)``; a single logit
``(B, 1)`` or ``(B,)`` is read as a binary model (classes 0 and 1, probability
of 1 = sigmoid of the logit).

Weights are read from safetensors.  A torch ``.pt``/``.pth``/``.bin`` state dict
is accepted too, but only through ``torch.load(weights_only=True)``, which
refuses anything but tensors and plain containers: fairfix never unpickles
arbitrary objects.
"""

from __future__ import annotations

import contextvars
import importlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fairfix import errors
from fairfix.models.base import INPUT, Model, check_state_dict, load_safetensors
from fairfix.models.erm import ErmConfig, erm_fit, split_rows

KIND = "factory"
WEIGHTS = "model.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")


class FactoryModel(Model):
    """A user module over numeric columns.

    Parameters
    ----------
    module
        The module the factory built, with its weights loaded.
    factory
        ``package.module:function`` (recorded when saving).
    features
        Input columns, in the order of the module's input vector.
    classes, positive
        Label values in logit order, and the positive label of a binary model.
    single_logit
        The module returns one logit per row (binary); ``forward`` turns it
        into the two logits ``[0, z]``.
    """

    kind = KIND

    def __init__(
        self,
        module: nn.Module,
        *,
        factory: str,
        features: Sequence[str],
        classes: Sequence[Any],
        positive: Any,
        single_logit: bool = False,
        **kw: Any,
    ):
        super().__init__(module, classes, positive, features, **kw)
        self.factory = factory
        self.features = list(features)
        self.single_logit = single_logit

    def encode(self, frame: Any) -> dict[str, torch.Tensor]:
        """``{"x": (B, F) float32}`` from the feature columns.

        Raises
        ------
        fairfix.errors.DataError
            A missing column, or a value that is not a number or is empty.
        """
        return {"x": torch.from_numpy(numeric_matrix(frame, self.features))}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, C)``."""
        x = inputs["x"].to(_param_dtype(self.module))  # (B, F)
        return _class_logits(self.module(x), self.single_logit)

    def conv_layers(self) -> list[str]:
        """Names of every ``nn.Conv1d/2d/3d`` in the module, in registration order."""
        return [n for n, m in self.module.named_modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)]

    @property
    def default_tap_layer(self) -> str:
        """The tap layer: the model's input (``<input>``) for a network with convolutions.

        A shortcut such as colour lives in the first layers, and LoRA then reaches every
        layer.  Without convolutions: the first linear layer's output when there are two or
        more linear layers, else ``""``.
        """
        if self.conv_layers():
            return INPUT
        linears = self.linear_layers()
        return linears[0] if len(linears) >= 2 else ""

    @property
    def default_lora_targets(self) -> list[str]:
        """Every convolution and linear layer except the last (the head), for a network with convolutions.

        Without convolutions: the linear layers after the first except the head (else all
        but the head).
        """
        linears = self.linear_layers()
        convs = self.conv_layers()
        if convs:
            return [*convs, *linears[:-1]]
        return linears[1:-1] or linears[:-1]

    def save(
        self,
        out: str | Path,
        *,
        config: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
        force: bool = False,
        export: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write a fairfix model directory (manifest + ``model.safetensors``).

        Returns the manifest.  ``export``: see :meth:`Model.write_model_dir`.
        """
        config = {**(config or {}), "factory": self.factory, "features": self.features}
        return self.write_model_dir(
            out, lambda tmp: self.write_state_dict(tmp / WEIGHTS), config=config, training=training, force=force,
            export=export, extra={"single_logit": self.single_logit},
        )


def numeric_matrix(frame: Any, features: Sequence[str]) -> np.ndarray:
    """``(B, F)`` float32 matrix of numeric columns; DataError naming a bad column."""
    out = np.empty((len(frame), len(features)), dtype=np.float32)
    for j, col in enumerate(features):
        if col not in frame.columns:
            shown = ", ".join(map(str, list(frame.columns)[:30]))
            raise errors.DataError(f"no feature column {col!r}; columns are: {shown}")
        try:
            x = frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            from fairfix.data.frames import not_numeric

            raise not_numeric(frame, col) from exc
        bad = ~np.isfinite(x)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise errors.DataError(
                f"column {col!r} has {int(bad.sum())} empty or non-finite value(s) "
                f"(first at row {first}); the model needs a number in every row"
            )
        out[:, j] = x
    return out


def _class_logits(out: Any, single_logit: bool) -> torch.Tensor:
    """Logits ``(B, C)`` of a module's output; one logit per row becomes ``[0, z]`` (binary)."""
    logits = _as_logits(out)
    if logits.dim() == 1:  # (B,) -> (B, 1)
        logits = logits.unsqueeze(-1)
    if single_logit:  # (B, 1) -> (B, 2): softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]
        logits = torch.cat([torch.zeros_like(logits), logits], dim=-1)
    return logits


def _as_logits(out: Any) -> torch.Tensor:
    """The logits tensor of a module's output (a tensor, a tuple's first item, or ``.logits``)."""
    if isinstance(out, tuple | list) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor) and hasattr(out, "logits"):
        out = out.logits
    if not isinstance(out, torch.Tensor):
        raise errors.ModelError(f"the factory's module returned {type(out).__name__}, not a tensor")
    return out


def _param_dtype(module: nn.Module) -> torch.dtype:
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


#: Modules whose factories are fairfix built-ins: a manifest may name them on its own.
BUILTIN_MODULES = ("fairfix.models.vision",)
_TRUSTED: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("fairfix_trusted_factories",
                                                                          default=frozenset())


def is_builtin(factory: str) -> bool:
    """True for a factory fairfix ships (``fairfix.models.vision:small_cnn``)."""
    mod, _, func = factory.partition(":")
    return mod in BUILTIN_MODULES and bool(func) and not func.startswith("_")


@contextmanager
def trusted_factories(*names: str | None) -> Iterator[None]:
    """Inside the block, manifests may name these factories too (the user named them: ``--factory``)."""
    token = _TRUSTED.set(_TRUSTED.get() | {n for n in names if n})
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def check_recorded_factory(path: Path, factory: Any) -> str:
    """The factory a manifest names, if fairfix may run it: a built-in, or one the user named.

    An artifact alone never decides which code runs: a model directory from
    someone else could name any importable function (``os:abort``).

    Raises
    ------
    fairfix.errors.ModelError
        The manifest names no factory, or one that is neither a built-in nor
        named by the user.
    """
    from fairfix.artifacts import MANIFEST

    if not isinstance(factory, str) or not factory:
        raise errors.ModelError(f"{path / MANIFEST}: a factory model needs config.factory (a string)")
    if is_builtin(factory) or factory in _TRUSTED.get():
        return factory
    raise errors.ModelError(
        f"{path}: its {MANIFEST} names the factory {factory!r}, which is not a fairfix built-in; fairfix "
        f"runs no code that an artifact names on its own: pass --factory {factory} if you trust it"
    )


def factory_name(factory: str | nn.Module) -> str:
    """What a manifest records as the factory: the ``package.module:function`` given, or a module's class.

    A model built from an ``nn.Module`` in memory (the Python API) records its class as
    ``package.module:Class``; loading it back takes ``factory=`` (that name, if the class builds
    the module without arguments, or the module itself): fairfix never runs what a manifest names
    on its own.
    """
    if isinstance(factory, nn.Module):
        return f"{type(factory).__module__}:{type(factory).__qualname__}"
    return factory


def import_factory(factory: str | nn.Module) -> nn.Module:
    """Build the module named by ``package.module:function`` (called without arguments).

    The module is imported from ``sys.path`` as it is: the working directory is
    not added (install the package, or set ``PYTHONPATH``), so a file that happens
    to lie next to the data is never imported by accident.  An ``nn.Module`` (the
    Python API) gives a deep copy of itself: the caller's module is never changed.
    """
    if isinstance(factory, nn.Module):
        import copy

        return copy.deepcopy(factory)
    mod_name, sep, func_name = factory.partition(":")
    if not sep or not mod_name or not func_name:
        raise errors.ModelError(
            f"--factory {factory!r}: expected package.module:function, e.g. mypkg.nets:make_mlp"
        )
    try:
        obj: Any = importlib.import_module(mod_name)
        for part in func_name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise errors.ModelError(f"cannot import factory {factory!r}: {exc}") from exc
    except (Exception, SystemExit) as exc:  # the module's own code failed at import
        raise errors.ModelError(
            f"cannot import factory {factory!r}: {type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from exc
    if not callable(obj):
        raise errors.ModelError(f"factory {factory!r} is a {type(obj).__name__}, not a function")
    try:
        module = obj()
    except (Exception, SystemExit) as exc:  # user code: any failure is a model that cannot be built
        raise errors.ModelError(
            f"factory {factory!r} failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from exc
    if not isinstance(module, nn.Module):
        raise errors.ModelError(
            f"factory {factory!r} returned {type(module).__name__}, not a torch nn.Module"
        )
    return module


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict: safetensors, or ``.pt``/``.pth``/``.bin`` with ``weights_only=True``.

    ``torch.load(weights_only=True)`` only rebuilds tensors and plain
    containers, never arbitrary pickled objects.
    """
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    if path.suffix not in PICKLE_SUFFIXES:
        raise errors.ModelError(
            f"{path}: expected a .safetensors state dict (or {'/'.join(PICKLE_SUFFIXES)} "
            "read with weights_only=True)"
        )
    if not path.is_file():
        raise errors.ModelError(f"{path}: no such weights file")
    import pickle

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise errors.ModelError(
            f"{path}: not a state dict torch can read with weights_only=True "
            f"({' '.join(str(exc).split())[:300]})"
        ) from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise errors.ModelError(f"{path}: not a state dict (a mapping of names to tensors)")
    return state


def load_factory_model(
    path: str | Path,
    factory: str | nn.Module,
    *,
    features: Sequence[str] | str | None = None,
    classes: Sequence[Any] | None = None,
    manifest: dict[str, Any] | None = None,
) -> FactoryModel:
    """Build the factory's module and load a state dict into it.

    Parameters
    ----------
    path
        A state dict file (``.safetensors``; ``.pt``/``.pth``/``.bin`` are read
        with ``torch.load(weights_only=True)``), or a fairfix model directory
        saved by :meth:`FactoryModel.save`.
    factory
        ``package.module:function`` returning an ``nn.Module``.
    features
        Numeric input columns (required unless the manifest records them).
    classes
        Label values in logit order; default ``0 .. C-1`` (C found by running
        the module on zero rows), or the manifest's.
    manifest
        The verified manifest of a fairfix directory (read here when absent).

    Raises
    ------
    fairfix.errors.ModelError
        The factory does not import or build a module, the weights do not match
        it, or it does not run on ``len(features)`` inputs.
    """
    from fairfix.artifacts import MANIFEST, read_manifest
    from fairfix.metrics.counts import normalize_values

    path = Path(path)
    recorded: dict[str, Any] = {}
    if path.is_dir():
        if manifest is None and (path / MANIFEST).is_file():
            manifest = read_manifest(path)
        if manifest is None:
            raise errors.ModelError(
                f"{path}: is a directory without {MANIFEST}; --factory needs a state dict file "
                "(.safetensors)"
            )
    if manifest is not None:
        if manifest.get("model_kind") != KIND:
            raise errors.ModelError(
                f"{path}: manifest model_kind is {manifest.get('model_kind')!r}, not {KIND!r}"
            )
        recorded = {**manifest.get("config", {}), **manifest}
    if isinstance(features, str):
        features = [c.strip() for c in features.split(",") if c.strip()]
    features = list(features or recorded.get("features") or [])
    if not features:
        raise errors.ModelError(f"{path}: a factory model needs --features COL,...")
    module = import_factory(factory)
    weights = path / WEIGHTS if path.is_dir() else path
    state = load_state(weights)
    check_state_dict(module, state, str(weights))
    module.load_state_dict(state)
    module.eval()
    n_out = _output_width(module, len(features), factory_name(factory))
    single = n_out == 1
    if classes is None:
        classes = recorded.get("classes") or list(range(2 if single else n_out))
    classes = normalize_values(list(classes))
    n_cls = 2 if single else n_out
    if len(classes) != n_cls:
        raise errors.ModelError(
            f"{path}: {len(classes)} classes given ({', '.join(map(repr, classes))}) but the "
            f"module has {n_out} output(s)" + (" (one logit: binary)" if single else "")
        )
    if len(set(classes)) != len(classes):
        raise errors.ModelError(f"{path}: repeated class values: {classes}")
    if "positive" in recorded and recorded.get("classes") == classes:
        positive = recorded["positive"]
    else:
        from fairfix.metrics.counts import choose_positive

        positive = choose_positive(classes)[0] if n_cls == 2 else None
    digest = manifest.get("digest") if manifest is not None else _file_digest(weights)
    return FactoryModel(module, factory=factory_name(factory), features=features, classes=classes,
                        positive=positive, single_logit=single, path=path, digest=digest,
                        manifest=manifest)


def module_model(module: nn.Module, *, features: Sequence[str], classes: Sequence[Any] | None = None,
                 positive: Any = None, factory: str | None = None) -> FactoryModel:
    """A trained ``nn.Module`` in memory as a model over the numeric ``features``.

    A deep copy: the caller's module is never changed, not even by a correction's LoRA layers.

    ``classes`` default to ``0 .. C-1`` (C from a dry pass; one logit: binary 0/1); ``positive`` to
    :func:`fairfix.metrics.counts.choose_positive`'s choice for two classes.  ``factory`` is the name its
    saved manifest records (default: the module's class, :func:`factory_name`).
    """
    from fairfix.metrics.counts import choose_positive, normalize_values

    if not isinstance(module, nn.Module):
        raise errors.UsageError(f"expected a torch nn.Module, got {type(module).__name__}")
    features = [str(f) for f in features]
    if not features:
        raise errors.UsageError("a torch module needs features=[column, ...] (its input columns, in order)")
    name = factory or factory_name(module)
    module = import_factory(module).eval()
    n_out = _output_width(module, len(features), name)
    single = n_out == 1
    n_cls = 2 if single else n_out
    classes = normalize_values(list(classes)) if classes is not None else list(range(n_cls))
    if len(classes) != n_cls:
        raise errors.UsageError(f"{len(classes)} classes given ({', '.join(map(repr, classes))}) but the module "
                                f"has {n_out} output(s)" + (" (one logit: binary)" if single else ""))
    if positive is None and n_cls == 2:
        positive = choose_positive(classes)[0]
    elif positive is not None and positive not in classes:
        raise errors.UsageError(f"positive {positive!r} is not one of the classes {classes}")
    return FactoryModel(module, factory=name, features=features, classes=classes,
                        positive=positive if n_cls == 2 else None, single_logit=single)


def _output_width(module: nn.Module, n_features: int, factory: str) -> int:
    """Logit count of the module (1 for a squeezed ``(B,)``), from a dry pass on two zero rows."""
    x = torch.zeros(2, n_features, dtype=_param_dtype(module))
    try:
        with torch.no_grad():
            out = _as_logits(module(x))
    except errors.ModelError:
        raise
    except Exception as exc:  # user code: any failure means these inputs do not fit
        raise errors.ModelError(
            f"factory {factory!r}: the module does not run on {n_features} input column(s) "
            f"(the --features count): {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        ) from exc
    if out.dim() == 1 and out.shape[0] == 2:
        return 1
    if out.dim() != 2 or out.shape[0] != 2 or out.shape[1] < 1:
        raise errors.ModelError(
            f"factory {factory!r}: the module returns shape {tuple(out.shape)} for 2 rows; "
            "expected logits (B, C)"
        )
    return int(out.shape[1])


def _file_digest(path: Path) -> str:
    from fairfix.artifacts import digest, sha256_file

    return digest({"files": {path.name: sha256_file(path)}})


def train_factory(
    frame: Any,
    *,
    label: str,
    features: Sequence[str],
    factory: str | nn.Module,
    config: ErmConfig,
    positive: Any = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> tuple[FactoryModel, dict[str, Any]]:
    """ERM training of the module ``factory`` builds, on the numeric ``features`` as they are.

    The same loop as the tabular MLP (:func:`fairfix.models.erm.erm_fit`): a
    seeded validation split for early stopping, AdamW, cross-entropy; bit for
    bit reproducible on CPU for a given ``config.seed`` (the factory is called
    under the seeded RNG, so its initial weights are seeded too).  Inputs are
    not rescaled: the module sees the values a :class:`FactoryModel` will feed it.

    Raises
    ------
    fairfix.errors.ModelError
        The factory does not build a module that runs on ``len(features)`` inputs.
    fairfix.errors.UsageError
        Its number of outputs does not fit the label's classes.
    """
    from fairfix.data.labels import encode_labels
    from fairfix.models.tabular import label_vocabulary

    if frame[label].isna().any():
        raise errors.DataError(
            f"label column {label!r} has {int(frame[label].isna().sum())} empty value(s)"
        )
    classes, pos = label_vocabulary(frame[label], positive)
    x = torch.from_numpy(numeric_matrix(frame, features))
    name = factory_name(factory)
    with torch.random.fork_rng(devices=[]):  # a probe for the output width; its weights are dropped
        n_out = _output_width(import_factory(factory).eval(), len(features), name)
    single = n_out == 1
    if (2 if single else n_out) != len(classes):
        raise errors.UsageError(
            f"factory {name!r}: the module has {n_out} output(s) but the label {label!r} has "
            f"{len(classes)} classes ({', '.join(map(repr, classes))})"
        )
    y = torch.from_numpy(encode_labels(frame[label], classes))
    tr_idx, val_idx = split_rows(len(frame), config.val_fraction, config.seed)
    module, info = erm_fit(
        lambda: import_factory(factory), x, y, train_idx=tr_idx, val_idx=val_idx, config=config,
        forward=lambda m, xb: _class_logits(m(xb.to(_param_dtype(m))), single), progress=progress,
    )
    model = FactoryModel(module, factory=name, features=features, classes=classes,
                         positive=pos, single_logit=single)
    return model, info
