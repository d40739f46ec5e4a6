"""Raw frame -> clean frame, as the contract says.

Cleaning renames columns to snake_case, drops id and leakage columns, lowercases categorical
values, applies each column's policy for the literal unknown marker (own category `unknown`, or
missing), coerces numeric dtypes and turns the target label into 0/1 (regression: a number). Ordered categories stay
as labels here; the feature encoder turns them into ordinals for the model, so the snapshot,
requests, the prediction log and reports all share one readable representation.
"""

from __future__ import annotations

import pandas as pd

from churnops.contract import DatasetContract
from churnops.tasks import task_for
from churnops.validator import ContractReport, snake_case


def rename_map(columns: list[str], contract: DatasetContract) -> dict[str, str]:
    """Raw column -> clean name, honouring each feature's explicit `source`."""
    explicit = {spec.source: name for name, spec in contract.features.items() if spec.source}
    out = {}
    for c in columns:
        if c == contract.target.source:
            out[c] = contract.target.name
        else:
            out[c] = explicit.get(c, snake_case(c))
    return out


def dropped_columns(columns: list[str], contract: DatasetContract) -> list[str]:
    """Raw columns that never reach the model (ids, leakage)."""
    return [c for c in columns if contract.is_dropped(c)]


def clean_frame(raw: pd.DataFrame, contract: DatasetContract) -> pd.DataFrame:
    """Return the clean frame: contract features in order, then the 0/1 target when present.

    Values are normalised but not judged: `check_clean_frame` reports what breaks the contract
    (unexpected categories stay visible to it; unparseable numbers become NaN and are reported
    by comparing with the raw frame in `check_raw_frame`).
    """
    df = raw.drop(columns=dropped_columns(list(raw.columns), contract))
    df = df.rename(columns=rename_map(list(df.columns), contract))
    markers = contract.unknown_marker_set()
    out = {}
    for name, spec in contract.features.items():
        if name not in df.columns:
            continue
        col = df[name]
        if spec.kind == "numeric":
            out[name] = pd.to_numeric(col, errors="coerce").astype("float64")
        else:
            s = col.astype("object").where(col.notna(), None)
            s = s.map(lambda v: v if v is None else str(v).strip().lower())
            is_marker = s.isin(markers)
            if spec.unknown == "category":
                s = s.where(~is_marker, "unknown")
            else:
                s = s.where(~is_marker, None)
            out[name] = s.astype("object")
    clean = pd.DataFrame(out, index=df.index)
    target = contract.target.name
    if target in df.columns:
        clean[target] = task_for(contract).clean_target(df[target], contract)
    return clean.reset_index(drop=True)


def check_raw_frame(raw: pd.DataFrame, contract: DatasetContract, subject: str):
    """Clean `raw` and check it; returns (clean frame, report listing every failed check)."""
    clean = clean_frame(raw, contract)
    report = check_clean_frame(clean, contract, subject=subject)
    renamed = rename_map(list(raw.columns), contract)
    if contract.target.source not in raw.columns:
        report.failures.insert(0, f"{contract.target.source}: target column missing from the raw data")
    # numbers that did not parse show up as NaN after cleaning: name them
    for raw_col, name in renamed.items():
        spec = contract.features.get(name)
        if spec is None or spec.kind != "numeric" or contract.is_dropped(raw_col):
            continue
        parsed = pd.to_numeric(raw[raw_col], errors="coerce")
        bad = raw[raw_col].notna() & parsed.isna()
        if bad.any():
            sample = raw.loc[bad, raw_col].astype(str).unique()[:3].tolist()
            report.failures.append(f"{name}: {int(bad.sum())} non-numeric value(s), e.g. {sample}")
    kept = set(contract.features) | {contract.target.name}
    extra = sorted(c for c in raw.columns if not contract.is_dropped(c) and renamed.get(c) not in kept)
    if extra:
        report.warnings.append(f"columns not in the contract, ignored: {extra}")
    return clean, report


def check_clean_frame(df, contract: DatasetContract, subject: str = "frame") -> ContractReport:
    """Check a clean frame (snake_case columns, labels lowercased) against every rule, the target's
    values by the contract's task (`churnops.validator.CompiledContract.check_frame`)."""
    return contract.validator().check_frame(df, task_for(contract), subject)
