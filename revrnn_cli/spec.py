"""Experiment specs: YAML files validated into typed configs, with ``--set a.b=value`` overrides.

    revrnn train experiments/ptb_revlstm.yaml --set model.layers=2 --set train.epochs=3
    revrnn train experiments/ptb_revlstm.yaml --print-config

A spec composes the typed config of each part (``data:`` → :class:`DataConfig`, ``model:`` →
:class:`LMConfig`, ``decode:`` → :class:`DecodeConfig`), each defined next to what it configures and
each rejecting unknown keys; ``train:`` and ``output:`` configure the runner and are defined here. ``task: translation`` selects :class:`TranslationSpec` instead, whose
``data:``, ``model:`` and ``decode:`` sections are the translation ones; ``train:`` is shared, so a misspelt key is an error rather than a silently ignored setting.
Errors are one line naming the file, the key and what is allowed:
``experiments/x.yaml: model.hidden_size: must be even …, got 33``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .data.config import DataConfig, TranslationDataConfig
from .engine.segment import resolve_backprop
from .errors import SpecError
from .models.lm import LMConfig
from .models.nmt import NMTConfig
from .models.search import DecodeConfig


class _StrictLoader(yaml.SafeLoader):
    """``safe_load`` that refuses a key given twice in one mapping.

    Plain YAML keeps the last value silently, so ``lr: 20`` ... ``lr: 2`` trains with 2 while the
    reader of the file sees 20.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {first})", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, where: str):
    """Parse YAML text with :class:`_StrictLoader`; errors are one line naming ``where`` and the line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{where}{at}: invalid YAML: {problem}") from None


def load_yaml(path: Path | str):
    """Parse a YAML file with ``safe_load`` rules (no arbitrary objects, no duplicate keys).

    Every problem is one line naming the file: missing, unreadable, not UTF-8, invalid YAML (with
    the line), or empty. An empty file is an error rather than "all defaults": the defaults are a
    full-size experiment, which is never what an empty file meant.
    """
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path}: is a directory, not a spec file")
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not a UTF-8 text file (byte {e.start:,} is 0x{data[e.start]:02x}); "
                        f"a spec is YAML text") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raise SpecError(f"{path}: the file is empty (or holds only comments); a spec is a YAML mapping of "
                        f"settings, as in experiments/quickstart.yaml")
    return raw


def validation_message(exc, prefix: str, flags: dict[str, str] | None = None, model: type | None = None) -> str:
    """Format the first error of a pydantic ``ValidationError`` as ``prefix: key: message``.

    ``flags`` maps top-level field names to the command-line flag that set them, so that errors
    about options name the option (``--hidden``) rather than the field. With ``model``, an unknown
    key's message lists the keys allowed at that place.
    """
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return f"{prefix}: {exc}"
    first = errors()[0]
    loc = [str(p) for p in first.get("loc", ())]
    kind = first.get("type", "")
    msg = first.get("msg", "invalid value")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1]) if model is not None else None
        msg = "unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    else:
        msg = msg.removeprefix("Value error, ")
        if "input" in first and kind != "missing" and "got" not in msg and not isinstance(first["input"], (dict, list)):
            msg += f", got {first['input']!r}"
    if flags and loc and loc[0] in flags:
        key = flags[loc[0]]
    else:
        key = ".".join(loc) or "(top level)"
    return f"{prefix}: {key}: {msg}"


def _allowed_keys(model: type, path: list[str]) -> list[str] | None:
    for part in path:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None or not isinstance(field.annotation, type):
            return None
        model = field.annotation
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else None


def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply ``a.b.c=value`` assignments (values parsed as YAML: numbers, booleans, null, lists)."""
    out = yaml.safe_load(yaml.safe_dump(raw)) if raw else {}
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"{source} {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not key.strip():
            raise SpecError(f"{source} {item!r}: empty key")
        if not all(p.strip() for p in parts):
            raise SpecError(f"{source} {item!r}: {key.strip()!r} has an empty part; keys are like train.lr")
        parts = [p.strip() for p in parts]
        try:
            parsed = parse_yaml(value, f"{source} {item!r}") if value.strip() else None
        except SpecError as e:
            if "duplicate key" in str(e):
                raise
            parsed = value
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise SpecError(f"{source} {item!r}: {p} is a value, not a section")
            node = child
        node[parts[-1]] = parsed
    return out


# ---- the experiment spec -----------------------------------------------------------------------


TASKS = ("lm", "translation")


class TrainConfig(BaseModel):
    """The ``train:`` section: what the training loop does (values default to the paper code's
    ``language_modelling/train.py``). It lives here, beside ``output:``, because both configure the
    runner that reads the spec, and the spec must not depend on the runner."""

    model_config = ConfigDict(extra="forbid")

    backprop: str | None = None  # reversible cells only: reverse or store; None = the engine's default
    lr: float = Field(20.0, gt=0)
    weight_decay: float = Field(1.2e-6, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    clip: float = Field(0.1, ge=0)  # global gradient-norm clipping; 0 disables it
    batch_size: int = Field(20, ge=1)
    eval_batch_size: int = Field(10, ge=1)
    test_batch_size: int = Field(1, ge=1)
    bptt: int = Field(70, ge=1)
    random_bptt: bool = True  # AWD-LSTM: N(70 or 35, 5), lr scaled by length / bptt
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)  # stop (and checkpoint) after this many optimizer steps
    steps_per_epoch: int | None = Field(None, ge=1)  # cap an epoch (quick runs); None = the whole split
    schedule: Literal["plateau", "halve_on_rise", "none"] = "plateau"
    lr_decay: float = Field(4.0, gt=1)
    nonmono: int = Field(5, ge=0)
    min_lr: float = Field(0.0, ge=0)  # stop training once the learning rate falls below this
    log_interval: int = Field(50, ge=1)
    eval_batches: int | None = Field(None, ge=1)  # cap validation batches (quick runs)
    checkpoint_every: int | None = Field(None, ge=1)  # also save `last` every N steps

    @field_validator("backprop")
    @classmethod
    def _backprop(cls, v):
        return None if v is None else resolve_backprop(v)


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runs_dir: str = "runs"
    name: str | None = None


class ExperimentSpec(BaseModel):
    """A whole experiment. Feeding a run's saved ``config.yaml`` back reproduces the run."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["lm"] = "lm"
    name: str = Field("experiment", min_length=1)
    seed: int = 1111
    device: str = "auto"
    data: DataConfig = DataConfig()
    model: LMConfig = LMConfig()
    train: TrainConfig = TrainConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _combinations(self):
        rev = self.model.reversible
        if self.train.backprop is not None and not rev:
            raise ValueError(f"train.backprop applies to reversible cells (revgru, revlstm), not to {self.model.cell}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        return self

    @property
    def backprop(self) -> str | None:
        if not self.model.reversible:
            return None
        return resolve_backprop(self.train.backprop)


class TranslationSpec(ExperimentSpec):
    """A translation experiment (``task: translation``): Multi30k, an attention encoder-decoder."""

    task: Literal["translation"] = "translation"
    data: TranslationDataConfig = TranslationDataConfig()
    model: NMTConfig = NMTConfig()
    decode: DecodeConfig = DecodeConfig()


def spec_class(raw: dict, where: str) -> type[ExperimentSpec]:
    task = raw.get("task", "lm")
    if task not in TASKS:
        raise SpecError(f"{where}: task: must be one of {', '.join(TASKS)}, got {task!r}")
    return TranslationSpec if task == "translation" else ExperimentSpec


def load_spec(path: Path | str | None, overrides: list[str] = (), base: dict | None = None,
              where: str | None = None) -> tuple[ExperimentSpec, dict]:
    """Load, override and validate a spec; returns the typed spec and its plain, merged dict.

    ``base`` is a spec already read (``path`` None); ``where`` names it in errors.
    """
    where = str(path) if path is not None else (where or "spec")
    raw = load_yaml(path) if path is not None else (base or {})
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping at the top level")
    merged = apply_overrides(raw, list(overrides))
    _reject_non_finite(merged, where)  # before validation too: "must be finite" says more than "must be > 0"
    cls = spec_class(merged, where)
    try:
        spec = cls.model_validate(merged)
    except ValidationError as e:
        raise SpecError(validation_message(e, where, model=cls)) from None
    _reject_non_finite(spec.model_dump(), where)  # after validation: "1e400" became a float there
    return spec, spec.model_dump(mode="json")


def _reject_non_finite(node, where: str, key: str = "") -> None:
    """No value of a spec may be NaN or infinite (``.inf``, ``.nan`` in YAML).

    They pass ``gt=0``-style bounds (infinity is greater than 0) and would only show up later as
    a diverged run far from the cause; no setting of an experiment means infinity.
    """
    if isinstance(node, dict):
        for k, v in node.items():
            _reject_non_finite(v, where, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _reject_non_finite(v, where, f"{key}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise SpecError(f"{where}: {key or '(top level)'}: must be a finite number, got {node!r}")


def dump_spec(spec: ExperimentSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


__all__ = ["ExperimentSpec", "OutputConfig", "TrainConfig", "TranslationSpec", "spec_class", "apply_overrides", "dump_spec",
           "load_spec", "load_yaml", "parse_yaml", "validation_message"]
