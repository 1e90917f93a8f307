"""One small interface over every model kind fairfix can run.

A :class:`Model` turns raw table rows into model inputs (``encode``), runs them
(``logits`` / ``predict_proba``), exposes the representation at a named layer
(``representation``, through a forward hook that is removed in ``finally``),
and names its linear layers, its default tap layer and its default LoRA
targets.  Kinds: the fairfix tabular MLP, Hugging Face sequence classifiers,
and any torch module built by a user factory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from fairfix import errors

M = TypeVar("M", bound=nn.Module)


@dataclass
class Representation:
    """Activations at a tap layer: ``(B, D)`` vectors, or ``(B, T, D)`` tokens with a ``(B, T)`` mask."""

    values: torch.Tensor
    mask: torch.Tensor | None = None

    @property
    def is_sequence(self) -> bool:
        """True for token sequences (attention pooling needed)."""
        return self.values.dim() == 3


MODEL_SCHEMA = "fairfix.model/1"
#: The tap "layer" that is the model's own input (its first positional argument): a detector
#: there reads the raw features, and LoRA may adapt every layer of the model.
INPUT = "<input>"


class Model(ABC):
    """A loaded classifier.

    Attributes
    ----------
    kind
        ``tabular_mlp``, ``hf_sequence_classification`` or ``factory``.
    module
        The torch module (in eval mode).
    classes
        Label values in the order of the output logits.
    positive
        The positive label of a binary model (None for multiclass).
    input_columns
        Table columns the model reads.
    path, digest
        Where it was loaded from, and the artifact's identity (sha256).
    """

    kind: str = ""
    #: Rows per inference batch when streaming a table through the model.
    batch_rows: int = 8192
    #: Input columns to parse as numbers when reading CSV (others keep their inferred type).
    numeric_columns: list[str] = []
    #: The per-row outputs :meth:`predict_with_extras` adds, and their Spark SQL types ("double",
    #: "boolean", "long", "string"; declared up front so ``fairfix.spark.predict`` can give its
    #: schema before it runs).
    extra_outputs: dict[str, str] = {}

    def __init__(
        self,
        module: nn.Module,
        classes: Sequence[Any],
        positive: Any,
        input_columns: Sequence[str],
        path: Path | None = None,
        digest: str | None = None,
        manifest: dict[str, Any] | None = None,
    ):
        self.module = module.eval()
        self.classes = list(classes)
        self.positive = positive
        self.input_columns = list(input_columns)
        self.path = path
        self.digest = digest
        self.manifest = manifest or {}

    # -- inputs and outputs -----------------------------------------------------
    @abstractmethod
    def encode(self, frame: Any) -> dict[str, torch.Tensor]:
        """Model inputs for a pandas DataFrame of raw rows (the ``input_columns``)."""

    @abstractmethod
    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, C)`` for encoded inputs."""

    @torch.no_grad()
    def predict_proba(self, frame: Any) -> np.ndarray:
        """Class probabilities ``(B, C)`` (float64) for raw rows."""
        logits = self.forward(self.encode(frame))
        return torch.softmax(logits.float(), dim=-1).double().numpy()

    @property
    def positive_index(self) -> int | None:
        """Column of the positive class in ``predict_proba`` (None for multiclass)."""
        return None if self.positive is None else self.classes.index(self.positive)

    # -- layers -------------------------------------------------------------------
    def linear_layers(self) -> list[str]:
        """Names of every ``nn.Linear`` in the module, in registration order."""
        return [n for n, m in self.module.named_modules() if isinstance(m, nn.Linear)]

    @property
    def head_layer(self) -> str:
        """The classification head: its input is the final representation (the last Linear)."""
        linear = self.linear_layers()
        if not linear:
            raise errors.ModelError("model has no linear layer to use as its head")
        return linear[-1]

    def predict_with_extras(self, frame: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Probabilities and extra per-row outputs (a corrected model adds ``risk``, ``corrected``)."""
        return self.predict_proba(frame), {}

    def layer_names(self) -> list[str]:
        """Names a representation can be taken from (``<input>`` and every named submodule)."""
        return [INPUT, *(n for n, _ in self.module.named_modules() if n)]

    @property
    @abstractmethod
    def default_tap_layer(self) -> str:
        """The layer whose output the bias detector reads by default."""

    @property
    @abstractmethod
    def default_lora_targets(self) -> list[str]:
        """Linear layers after the tap that LoRA adapts by default."""

    def check_layer(self, layer: str) -> nn.Module:
        """The submodule called ``layer`` (the whole module for ``<input>``).

        ModelError listing the valid names otherwise.
        """
        if layer == INPUT:
            return self.module
        if layer:
            try:  # a walk down the dotted path (gated inference calls this once per batch)
                return self.module.get_submodule(layer)
            except AttributeError:
                pass
        modules = dict(self.module.named_modules())
        if not layer or layer not in modules:
            names = self.layer_names()
            shown = ", ".join(names[:30]) + (f", ... ({len(names)} in all)" if len(names) > 30 else "")
            raise errors.ModelError(f"model has no layer {layer!r}; layers: {shown}")
        return modules[layer]

    @contextmanager
    def capture(self, layer: str) -> Iterator[dict[str, torch.Tensor]]:
        """Record the output of ``layer`` during forward passes inside the block.

        Vectors ``(B, D)`` and token states ``(B, T, D)`` as they are; feature maps of a
        convolution ``(B, C, H, W)`` flattened to ``(B, C*H*W)`` (what the detector reads).
        """
        module = self.check_layer(layer)
        store: dict[str, torch.Tensor] = {}

        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            out = out[0] if isinstance(out, tuple) else out
            store["out"] = out.flatten(1) if out.dim() > 3 else out  # feature maps (B, C, H, W) -> (B, C*H*W)

        def input_hook(_mod: nn.Module, args: tuple) -> None:
            hook(_mod, args, args[0].float())

        handle = (module.register_forward_pre_hook(input_hook) if layer == INPUT
                  else module.register_forward_hook(hook))
        try:
            yield store
        finally:
            handle.remove()

    @contextmanager
    def capture_input(self, layer: str) -> Iterator[dict[str, torch.Tensor]]:
        """Record the input of ``layer`` (e.g. the head's: the final representation) inside the block."""
        module = self.check_layer(layer)
        store: dict[str, torch.Tensor] = {}

        def hook(_mod: nn.Module, args: tuple) -> None:
            store["in"] = args[0]

        handle = module.register_forward_pre_hook(hook)
        try:
            yield store
        finally:
            handle.remove()

    @torch.no_grad()
    def representation(self, inputs: dict[str, torch.Tensor], layer: str | None = None) -> Representation:
        """Activations at ``layer`` (default: the tap layer) for encoded inputs."""
        layer = layer or self.default_tap_layer
        with self.capture(layer) as store:
            self.forward(inputs)
        values = store["out"]
        mask = inputs.get("attention_mask") if values.dim() == 3 else None
        return Representation(values, mask)

    def write_model_dir(
        self,
        out: str | Path,
        write_files: Any,
        *,
        config: dict[str, Any],
        training: dict[str, Any] | None,
        extra: dict[str, Any],
        force: bool = False,
        export: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write a ``fairfix.model/1`` directory: ``write_files(tmp)`` writes the weights; returns the manifest.

        ``export`` (``fairfix export``): ``{"card": README.md text, "merged_from": provenance}``; the
        card is one of the hashed files, the provenance a manifest field.
        """
        from fairfix.artifacts import write_artifact

        def write(tmp: Path) -> None:
            write_files(tmp)
            if export and export.get("card") is not None:
                (tmp / "README.md").write_text(export["card"], encoding="utf-8")

        merged = {"merged_from": export["merged_from"]} if export and export.get("merged_from") else {}
        return write_artifact(
            out, kind="model", schema=MODEL_SCHEMA, write_files=write, force=force, config=config,
            extra={"model_kind": self.kind, "classes": self.classes, "positive": self.positive, **extra,
                   "training": training or {}, **merged},
        )

    def write_state_dict(self, path: Path) -> None:
        """The module's tensors as a safetensors file (never a pickle)."""
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(path), metadata={"format": "pt"})

    def describe(self) -> dict[str, Any]:
        """What `fairfix` records about a model in reports."""
        return {"kind": self.kind, "path": str(self.path) if self.path else None, "sha256": self.digest,
                "classes": self.classes, "positive": self.positive}


def check_state_dict(module: nn.Module, state: dict[str, Any], source: str) -> None:
    """Refuse a state dict whose keys or shapes do not match ``module`` (one line naming them).

    ``state`` maps names to tensors, or to shapes (tuples) as :func:`safetensors_shapes` reads them.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing:
        raise errors.ModelError(
            f"{source}: checkpoint lacks {len(missing)} tensor(s) the model needs, e.g. {missing[0]!r}"
        )
    if unexpected:
        raise errors.ModelError(
            f"{source}: checkpoint has {len(unexpected)} tensor(s) the model does not, e.g. {unexpected[0]!r}"
        )
    for k, v in own.items():
        theirs = tuple(state[k]) if isinstance(state[k], tuple) else tuple(state[k].shape)
        if theirs != tuple(v.shape):
            raise errors.ModelError(
                f"{source}: tensor {k!r} has shape {theirs}, the model expects {tuple(v.shape)}"
            )


#: The largest safetensors header fairfix reads (the format's own limit is 100 MB).
_MAX_HEADER = 100 << 20


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors file's header, without reading (or allocating) a tensor."""
    import json
    import struct

    if not path.is_file():
        raise errors.ModelError(f"{path}: no such weights file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("shorter than a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _MAX_HEADER):
                raise ValueError(f"header length {n} exceeds the file")
            header = json.loads(fh.read(n))
        return {k: tuple(int(d) for d in v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise errors.ModelError(f"{path}: not a readable safetensors file ({' '.join(str(exc).split())})") from exc


def build_checked(build: Callable[[], M], weights: Path, source: str) -> M:
    """``build()`` a module whose sizes come from a manifest, only once they match ``weights``' header.

    The module is first built on torch's meta device (no memory), its shapes compared with the
    safetensors header; only then is it built for real.  A manifest that claims huge layers
    (``"hidden": [100000, 100000]``) is refused in one line instead of asking torch for 40 GB.
    """
    with torch.device("meta"):
        shell = build()
    check_state_dict(shell, safetensors_shapes(weights), source)
    return build()


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (never a pickle); ModelError for a missing/corrupt file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise errors.ModelError(f"{path}: no such weights file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise errors.ModelError(f"{path}: not a readable safetensors file ({' '.join(str(exc).split())})") from exc
