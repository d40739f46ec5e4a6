"""One record, checked in one pass over the compiled rules: the fast path of `/predict` and the stream.

The reference (`CompiledContract.validate`) walks every field through its general checks; this
walks a tuple of (name, number?, lo, hi, table) built from the same rules, and accepts exactly
what the reference accepts without conversion (finite int/float numbers in range, known
categories or the unknown marker, extra fields that name no feature) with the same values.
Anything else (a raw column name, a string number, a missing field, a bad value) goes to the
reference, which names every problem.
"""

from __future__ import annotations

from typing import Any

from churnops.validator import CompiledContract, RecordResult


class FastValidator:
    """`CompiledContract.validate` with a fast path for the common, valid record."""

    def __init__(self, compiled: CompiledContract, unknown_category: str = "reject"):
        self.compiled = compiled
        self.unknown_category = unknown_category
        self.plan = tuple((r.name, r.shape == "number", r.lo, r.hi, r.table) for r in compiled.rules)
        self.deferred = any(r.shape not in ("number", "category") for r in compiled.rules)
        self.names = compiled.names

    def _extras(self, record: dict) -> list[str] | None:
        """The extra fields of a record with every feature present (None: one names a feature)."""
        extra = [k for k in record if k not in self.names]
        feature_of = self.compiled.feature_of
        return None if any(feature_of(k) is not None for k in extra) else extra

    def __call__(self, record: Any) -> RecordResult:
        if type(record) is dict and not self.deferred:
            values = {}
            try:
                for name, numeric, lo, hi, table in self.plan:
                    v = record[name]
                    if numeric:
                        t = type(v)
                        if (t is float or t is int) and lo <= v <= hi:  # NaN fails the comparison
                            values[name] = float(v)
                            continue
                        break
                    if type(v) is str:
                        c = table.get(v)
                        if c is None and v not in table:
                            c = v.strip().lower()
                            if c not in table:
                                break
                            c = table[c]
                        values[name] = c
                        continue
                    break
                else:
                    if len(record) == len(self.plan):
                        return RecordResult(values, {}, [])
                    ignored = self._extras(record)
                    if ignored is not None:
                        return RecordResult(values, {}, ignored)
            except (KeyError, OverflowError):  # a missing field; an int too large to compare with a float
                pass
        return self.compiled.validate(record, self.unknown_category)
