"""The one validator of a data contract, compiled once from it.

`compile_contract(contract)` turns the contract's features into one tuple of `FeatureRule`s
(name, kind, dtype, closed range, category table, raw name, required) and everything that judges
data reads those rules: the training checks (`check_frame`, on clean frames), the servers'
records (`validate`, for `/predict`, `/predict/batch` and the stream), labels (`outcome_of`, for
`/feedback`), and the fast paths in `churnops.speed`, which generate their per-column form and
their msgspec row type from the same rules. Everything that depends on a feature's kind lives in
this module: a new kind is one `FeatureRule` shape and its branches here.

Records may use the raw file's column names (`Customer_Age`, `Gender`, ...): a field that is not
a feature but whose name the contract maps to one (the feature's `source`, else the snake_case
rule that cleaning uses) is renamed, and the result says so (`renamed`). The same feature sent
under two names is an error naming the second name.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from churnops.contract import DatasetContract

UnknownPolicy = Literal["reject", "unknown"]
BIGGEST = sys.float_info.max


def snake_case(name: str) -> str:
    """`Months_Inactive_12_mon` -> `months_inactive_12_mon`; `CustomerAge` -> `customer_age`."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(name).strip())
    s = re.sub(r"[^0-9a-zA-Z]+", "_", s)
    return s.strip("_").lower()


@dataclass
class ContractReport:
    """Every failed check of one validation, readable as one message."""

    subject: str
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        head = f"data contract check of {self.subject}: " + (
            "passed" if self.ok else f"{len(self.failures)} failed check(s)"
        )
        lines = [head] + [f"  - FAIL {f}" for f in self.failures] + [f"  - warn {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass(frozen=True)
class FeatureRule:
    """What the contract says about one feature, in the form every check reads.

    `shape` is what a value looks like on the wire: "number" (a finite number in [lo, hi]) or
    "category" (a string looked up in `table`, case-insensitively). The fast paths handle these
    two shapes and defer anything else to `CompiledContract.validate`.
    """

    name: str
    kind: str  # numeric | categorical | ordinal (the contract's word)
    dtype: str
    shape: Literal["number", "category"]
    lo: float  # closed range; open ends are the largest finite floats (never admits +-inf)
    hi: float
    declared_min: float | None
    declared_max: float | None
    categories: tuple[str, ...]
    table: dict  # lowercase raw value (categories and unknown markers) -> clean value (None: missing)
    unknown: str  # the unknown marker's policy: "category" or "missing"
    max_null_fraction: float
    raw_name: str | None  # the raw column it comes from when declared (else matched by snake_case)
    required: bool = True


def _rule(name: str, spec, markers: set[str]) -> FeatureRule:
    if spec.kind == "numeric":
        lo = -BIGGEST if spec.min is None else float(spec.min)
        hi = BIGGEST if spec.max is None else float(spec.max)
        return FeatureRule(
            name, spec.kind, spec.dtype, "number", lo, hi, spec.min, spec.max, (), {}, spec.unknown,
            spec.max_null_fraction, spec.source,
        )  # fmt: skip
    table: dict = {c: c for c in spec.categories}
    for m in markers:
        table[m] = "unknown" if spec.unknown == "category" else None
    return FeatureRule(
        name, spec.kind, spec.dtype, "category", 0.0, 0.0, None, None, tuple(spec.categories), table,
        spec.unknown, spec.max_null_fraction, spec.source,
    )  # fmt: skip


def clean_category(value: str, rule: FeatureRule, unknown_category: UnknownPolicy = "reject") -> str | None:
    """Clean value of a string category (case-insensitive; the unknown marker follows the column's
    policy; an unseen category is rejected with ValueError, or mapped with `unknown_category="unknown"`)."""
    c = value.strip().lower()
    if c in rule.table:
        return rule.table[c]
    if unknown_category == "reject":
        raise ValueError(f"unknown category {value[:40]!r}; allowed {list(rule.categories)}")
    return "unknown" if rule.unknown == "category" and "unknown" in rule.categories else None


@dataclass
class RecordResult:
    """A validated request record: clean values in contract order, or the problems found."""

    values: dict[str, Any]
    errors: dict[str, str]
    ignored: list[str]
    renamed: dict[str, str] = field(default_factory=dict)  # raw field name -> feature name

    @property
    def ok(self) -> bool:
        return not self.errors


class CompiledContract:
    """The contract's features as `FeatureRule`s, with the checks that read them."""

    def __init__(self, contract: DatasetContract):
        self.contract = contract
        markers = contract.unknown_marker_set()
        self.rules: tuple[FeatureRule, ...] = tuple(_rule(n, s, markers) for n, s in contract.features.items())
        self.by_name = {r.name: r for r in self.rules}
        self.names = frozenset(self.by_name)
        self._snake_case = snake_case
        self._declared = {r.raw_name: r.name for r in self.rules if r.raw_name}
        self._aliases: dict[str, str | None] = {}  # field name -> feature (memo of feature_of, bounded)
        self._labels = {str(x).strip().lower() for x in contract.target.labels or []}  # none: a regression
        self._positive = (contract.target.positive or "").strip().lower()

    # ---- names ------------------------------------------------------------------------------------
    def feature_of(self, key: str) -> str | None:
        """The feature a field name stands for: itself, its declared raw name, or its snake_case."""
        if key in self.by_name:
            return key
        if key in self._declared:
            return self._declared[key]
        if key in self._aliases:
            return self._aliases[key]
        clean = self._snake_case(key) if isinstance(key, str) else None
        name = clean if clean in self.by_name else None
        if len(self._aliases) < 4096:  # the names clients send are few; odd ones are not kept
            self._aliases[key] = name
        return name

    # ---- one value ----------------------------------------------------------------------------------
    def check_value(self, rule: FeatureRule, v: Any, unknown_category: UnknownPolicy) -> tuple[Any, str | None]:
        """(clean value, None) or (None, the problem) for one field's value."""
        if rule.shape == "number":
            if isinstance(v, bool) or v is None:
                return None, f"expected a number, got {type(v).__name__ if v is not None else 'null'}"
            if isinstance(v, str):
                try:
                    v = float(v.strip())
                except ValueError:
                    return None, f"expected a number, got string {v[:40]!r}"
            if not isinstance(v, (int, float)):
                return None, f"expected a number, got {type(v).__name__}"
            if isinstance(v, int) and abs(v) > BIGGEST:
                return None, "number too large"
            if not math.isfinite(v):
                return None, f"expected a finite number, got {v}"
            if rule.declared_min is not None and v < rule.declared_min:
                return None, f"value {v} below minimum {rule.declared_min:g}"
            if rule.declared_max is not None and v > rule.declared_max:
                return None, f"value {v} above maximum {rule.declared_max:g}"
            return float(v), None
        if not isinstance(v, str):
            return None, f"expected a string category, got {type(v).__name__ if v is not None else 'null'}"
        try:
            return clean_category(v, rule, unknown_category), None
        except ValueError as exc:
            return None, str(exc)

    # ---- one record (the reference of every server path) ---------------------------------------------
    def validate(self, record: Any, unknown_category: UnknownPolicy = "reject") -> RecordResult:
        """Validate one feature object: clean values in contract order, or every problem by field.

        Numeric fields must be finite JSON numbers (numeric strings are accepted) inside the range;
        categorical fields must be strings among the allowed categories (case-insensitive; the
        literal unknown marker follows the column's policy). With `unknown_category="unknown"`, an
        unseen category is mapped to missing/`unknown` instead of rejected. Raw column names are
        renamed (reported in `renamed`); other extra fields are ignored and reported.
        """
        if not isinstance(record, dict):
            return RecordResult({}, {"features": f"expected a JSON object, got {type(record).__name__}"}, [])
        errors: dict[str, str] = {}
        sent: dict[str, str] = {}  # feature -> the field name it came under
        renamed: dict[str, str] = {}
        ignored: list[str] = []
        for key in record:
            name = self.feature_of(key)
            if name is None:
                ignored.append(key)
                continue
            if name in sent:  # the same feature under two names: name the raw one
                other = sent[name]
                raw, first = (key, other) if other == name or key != name else (other, key)
                errors[raw] = f"the raw name of {name}, also sent as {first!r}: send one of them"
                continue
            sent[name] = key
            if key != name:
                renamed[key] = name
        values: dict[str, Any] = {}
        for rule in self.rules:
            key = sent.get(rule.name)
            if key is None:
                if rule.required:
                    errors[rule.name] = f"missing required {rule.kind} field"
                continue
            if key in errors:
                continue
            value, problem = self.check_value(rule, record[key], unknown_category)
            if problem is not None:
                errors[key] = problem
            else:
                values[rule.name] = value
        return RecordResult(values, errors, ignored, renamed)

    # ---- labels (/feedback) -------------------------------------------------------------------------------
    def outcome_of(self, label: Any) -> int | None:
        """0/1 of a label (the contract's labels, case-insensitive, or churn/stayed words); None: unknown."""
        lab = str(label).strip().lower()
        if lab == self._positive or lab in ("churn", "churned", "true", "1", "yes"):
            return 1
        if lab in self._labels or lab in ("no_churn", "stayed", "false", "0", "no"):
            return 0
        return None

    @property
    def label_names(self) -> list[str]:
        return sorted(self._labels)

    # ---- frames (training) ---------------------------------------------------------------------------------
    def check_frame(self, df, task, subject: str = "frame") -> ContractReport:
        """Check a clean frame (snake_case columns, labels lowercased) against every rule; the
        target's values by `task` (a `churnops.tasks` object, passed in by the caller)."""
        contract = self.contract
        report = ContractReport(subject=subject, rows=len(df))
        if len(df) < contract.min_rows:
            report.failures.append(f"rows: {len(df)} < minimum {contract.min_rows}")
        target = contract.target.name
        if target not in df.columns:
            report.failures.append(f"{target}: target column missing")
        else:
            report.failures.extend(task.check_target(df[target], contract))
        for rule in self.rules:
            name = rule.name
            if name not in df.columns:
                report.failures.append(f"{name}: column missing (expected {rule.kind} {rule.dtype})")
                continue
            col = df[name]
            if rule.shape == "number":
                values = pd.to_numeric(col, errors="coerce")
                not_numeric = int((values.isna() & col.notna()).sum())
                if not_numeric:
                    sample = col[values.isna() & col.notna()].astype(str).unique()[:3].tolist()
                    report.failures.append(f"{name}: {not_numeric} non-numeric value(s), e.g. {sample}")
                finite = values[np.isfinite(values)]
                infinite = int((values.notna() & ~np.isfinite(values)).sum())
                if infinite:
                    report.failures.append(f"{name}: {infinite} infinite value(s)")
                lo, hi = rule.declared_min, rule.declared_max
                if lo is not None and (finite < lo).any():
                    report.failures.append(
                        f"{name}: {(finite < lo).sum()} value(s) below min {lo} (min seen {finite.min()})"
                    )
                if hi is not None and (finite > hi).any():
                    report.failures.append(
                        f"{name}: {(finite > hi).sum()} value(s) above max {hi} (max seen {finite.max()})"
                    )
                nulls = values.isna().mean() if len(values) else 0.0
            else:
                present = col.dropna().astype(str)
                unknown_cats = sorted(set(present.unique()) - set(rule.categories))
                if unknown_cats:
                    report.failures.append(
                        f"{name}: unexpected categories {unknown_cats[:5]} (allowed {list(rule.categories)})"
                    )
                nulls = col.isna().mean() if len(col) else 0.0
            if nulls > rule.max_null_fraction:
                report.failures.append(f"{name}: null fraction {nulls:.3f} > allowed {rule.max_null_fraction}")
        return report

    # ---- the wire form of the fast paths ----------------------------------------------------------------------
    def msgspec_type(self, rule: FeatureRule):
        """The msgspec field type that accepts exactly the values `validate` passes unconverted."""
        if rule.shape == "number":
            return Annotated[float, msgspec.Meta(ge=rule.lo, le=rule.hi)]
        return str


def compile_contract(contract: DatasetContract) -> CompiledContract:
    """The contract's compiled validator, built once per contract object and kept on it."""
    c = contract._compiled
    if c is None or c.contract is not contract:  # a model_copy carries its original's
        c = contract._compiled = CompiledContract(contract)
    return c
