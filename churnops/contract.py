"""The data contract: declared once in a YAML file, enforced on training frames and on requests.

A contract names the target and its positive label, the id and leakage columns to drop, and
for every feature its kind (numeric, categorical, ordinal), dtype, allowed categories, range
and tolerated null fraction. `check_raw_frame` runs every check and returns one report listing
every failure; `validate_record` does the same for one request record (used by the servers).
Both read the contract's one compiled validator (`churnops.validator`).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from churnops.image.contract import ImageContract
from churnops.validator import CompiledContract, ContractReport, RecordResult, compile_contract

DATASETS_DIR = Path(__file__).resolve().parent / "datasets"


class FeatureSpec(BaseModel):
    """One feature column of the clean frame."""

    kind: Literal["numeric", "categorical", "ordinal"]
    dtype: Literal["int", "float", "str"] = "float"
    source: str | None = None
    categories: list[str] = Field(default_factory=list)
    min: float | None = None
    max: float | None = None
    max_null_fraction: float = 0.0
    unknown: Literal["category", "missing"] = "missing"
    # words for people (explanations, reports); presentation only: not part of the fingerprint
    label: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "FeatureSpec":
        if self.kind != "numeric":
            if not self.categories:
                raise ValueError(f"a {self.kind} feature needs its categories listed")
            self.categories = [str(c).strip().lower() for c in self.categories]
            self.dtype = "str"
        return self


class TargetSpec(BaseModel):
    """The target: a label column (classification: `positive` among `labels`) or a number
    (regression: optional `min`/`max` range)."""

    source: str
    name: str = "target"
    positive: str | None = None
    labels: list[str] = Field(default_factory=list)
    min: float | None = None
    max: float | None = None


TABULAR_TASKS = ("binary_classification", "regression")


class DatasetContract(BaseModel):
    """A tabular data set (binary classification or regression), as configuration."""

    name: str
    task: Literal["binary_classification", "regression"] = "binary_classification"
    description: str = ""
    target: TargetSpec
    id_columns: list[str] = Field(default_factory=list)
    leakage_columns: list[str] = Field(default_factory=list)
    leakage_prefixes: list[str] = Field(default_factory=list)
    min_rows: int = 100
    unknown_markers: list[str] = Field(default_factory=lambda: ["Unknown"])
    features: dict[str, FeatureSpec]
    example: dict[str, Any] = Field(default_factory=dict)  # one valid clean record
    model_name: str | None = None  # registered model name (default: derived from `name`)
    tolerance: float | None = None  # regression: an error above this counts as "off" (metric, rule)

    # field validators, not one model validator: pydantic then reports every broken field of a
    # contract file at once (a model validator only runs once all fields are valid)
    @field_validator("target")
    @classmethod
    def _check_target(cls, target: TargetSpec, info: ValidationInfo) -> TargetSpec:
        if info.data.get("task", "binary_classification") == "binary_classification":
            if not target.positive or not target.labels:
                raise ValueError("a binary_classification contract needs `positive` and `labels`")
            if target.positive not in target.labels:
                raise ValueError(f"positive {target.positive!r} is not among labels {target.labels}")
        return target

    @field_validator("tolerance")
    @classmethod
    def _check_tolerance(cls, tolerance: float | None) -> float | None:
        if tolerance is not None and not (math.isfinite(tolerance) and tolerance > 0):
            raise ValueError(f"expected a positive number, got {tolerance}")
        return tolerance

    _compiled: Any = PrivateAttr(default=None)  # churnops.validator.compile_contract's cache

    def validator(self) -> CompiledContract:
        """The one compiled validator of this contract (`churnops.validator.CompiledContract`)."""
        return compile_contract(self)

    # ---- derived views ------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return list(self.features)

    @property
    def numeric_features(self) -> list[str]:
        return [n for n, f in self.features.items() if f.kind == "numeric"]

    @property
    def categorical_features(self) -> list[str]:
        return [n for n, f in self.features.items() if f.kind == "categorical"]

    @property
    def ordinal_features(self) -> list[str]:
        return [n for n, f in self.features.items() if f.kind == "ordinal"]

    def label_of(self, name: str) -> str:
        """The words the contract gives a feature (its `label`), else its name."""
        return self.features[name].label or name

    def source_of(self, name: str) -> str | None:
        """The raw column a clean feature comes from (None: matched by snake_case)."""
        return self.features[name].source

    def is_dropped(self, raw_column: str) -> bool:
        """True for id and leakage columns, which never reach the model."""
        return (
            raw_column in self.id_columns
            or raw_column in self.leakage_columns
            or any(raw_column.startswith(p) for p in self.leakage_prefixes)
        )

    def unknown_marker_set(self) -> set[str]:
        return {m.strip().lower() for m in self.unknown_markers}

    def fingerprint(self) -> str:
        """Stable SHA-256 of the contract's content."""
        # fields at their defaults are left out, so a contract's fingerprint does not change when a
        # field is added to the schema (model_name, task, tolerance, target range)
        exclude: dict = {k: True for k in ("model_name", "tolerance") if getattr(self, k) is None}
        if self.task == "binary_classification":
            exclude["task"] = True
        target_defaults = {k for k in ("min", "max") if getattr(self.target, k) is None}
        if target_defaults:
            exclude["target"] = target_defaults
        exclude["features"] = {"__all__": {"label"}}  # words for people, not data: a label never re-keys models
        return hashlib.sha256(self.model_dump_json(exclude=exclude or None).encode()).hexdigest()


def bundled_datasets() -> list[str]:
    """The data sets shipped with the project (`churnops/datasets/<name>.yaml`)."""
    return sorted(x.stem for x in DATASETS_DIR.glob("*.yaml"))


class ContractFileError(ValueError):
    """A contract file with mistakes: one error listing every problem with its YAML path."""

    def __init__(self, path: Path, problems: list[str]):
        self.path, self.problems = path, problems
        super().__init__(
            f"data contract {path} has {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )


def yaml_path(loc: tuple) -> str:
    """A pydantic error location as a YAML path (`features.age.kind`, `classes[2]`)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith("function-"):  # validator frames pydantic adds to the location
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def contract_problems(exc: ValidationError) -> list[str]:
    """Every problem of a contract's validation, each `<yaml path>: <what is wrong> (got <value>)`."""
    out = []
    for e in exc.errors(include_url=False):
        msg = str(e["msg"]).removeprefix("Value error, ")
        got = e.get("input")
        shown = "" if e["type"] == "missing" or isinstance(got, (dict, list)) else f" (got {str(got)[:60]!r})"
        out.append(f"{yaml_path(e['loc'])}: {msg}{shown}")
    return out


def validate_contract(model: type[BaseModel], raw: Any, p: Path):
    """`model.model_validate(raw)`, or one `ContractFileError` listing every problem by YAML path."""
    if not isinstance(raw, dict):
        raise ContractFileError(p, [f"(top level): expected a mapping of contract fields, got {type(raw).__name__}"])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ContractFileError(p, contract_problems(exc)) from None


def read_contract_file(name_or_path: str | Path) -> tuple[Path, Any]:
    """(path, parsed YAML) of a contract given by shipped name or file path; errors name the file."""
    p = Path(name_or_path)
    if not p.suffix:
        p = DATASETS_DIR / f"{name_or_path}.yaml"
    if not p.exists():
        raise FileNotFoundError(
            f"DATASET={name_or_path!r} names no data set: expected the path of a contract YAML file or "
            f"one of the bundled data sets {bundled_datasets()}"
        )
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"data contract {p}: not valid YAML ({exc})") from exc
    return p, raw


def load_contract(name_or_path: str | Path = "bank_churners") -> DatasetContract:
    """Load a tabular contract (binary classification or regression) by shipped name
    (`bank_churners`, `diabetes`) or by YAML/JSON file path."""
    p, raw = read_contract_file(name_or_path)
    if isinstance(raw, dict) and raw.get("task", "binary_classification") not in TABULAR_TASKS:
        raise ValueError(f"data contract {p} is a {raw['task']} contract, not a tabular one: use load_any_contract")
    return validate_contract(DatasetContract, raw, p)


# ---- frame checks -------------------------------------------------------------------------------


class ContractViolation(ValueError):
    """Raised when data breaks its contract; carries the full report."""

    def __init__(self, report: ContractReport):
        super().__init__(str(report))
        self.report = report


# ---- record checks (servers) ------------------------------------------------------------------------


def validate_record(
    record: Any,
    contract: DatasetContract,
    unknown_category: Literal["reject", "unknown"] = "reject",
) -> RecordResult:
    """Validate one feature object against the contract without pandas (the contract's compiled
    validator: `churnops.validator.CompiledContract.validate`, which documents the rules)."""
    return contract.validator().validate(record, unknown_category)


# ---- task dispatch ---------------------------------------------------------------------------------


TASKS = ("binary_classification", "regression", "image_classification")


def load_any_contract(name_or_path: str | Path = "bank_churners"):
    """THE place that picks a contract class by the file's `task` (default binary_classification).

    Returns a `DatasetContract` (tabular) or a `churnops.image.contract.ImageContract`.
    """
    p, raw = read_contract_file(name_or_path)
    task = raw.get("task", "binary_classification") if isinstance(raw, dict) else None
    if task in TABULAR_TASKS:  # what differs per tabular task: churnops.tasks
        return load_contract(p)
    if task == "image_classification":
        return validate_contract(ImageContract, raw, p)
    raise ValueError(f"data contract {p}: task {task!r} is not one of {list(TASKS)}")
