"""Column-wise validation of a batch request: the fast path of `POST /predict/batch`.

Built from the contract's compiled rules (`churnops.validator`): the numeric ranges, the category
tables and the msgspec row type below are all read from them, never written here.

Validating 1,000 rows one dict at a time costs several microseconds per row in Python; here each
feature is checked once per column (its value types as a set, its range with numpy, its
categories through the distinct values), and the clean columns are encoded straight into the
model matrix by `FeatureEncoder.transform_columns`. It accepts exactly what the per-row
validator accepts and gives the same clean values; on anything it cannot prove valid (a missing
field, a string number, an unknown category, a bad request_id, ...) it returns None and the
caller re-checks row by row, which names every problem by row and field.

`ColumnarValidator.decode` goes one step earlier for the common body, a JSON array of bare
feature objects with exactly the contract's fields: msgspec parses it straight into typed rows,
checking types and ranges in C as it parses, which halves parsing plus checking. Any other body
(a `features` envelope, an extra or missing field, a wrong type, NaN, ...) makes it return None
and goes the way above.
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass, field
from typing import Optional

import msgspec
import numpy as np

from churnops.request_ids import new_request_id, new_request_ids, valid_request_id
from churnops.validator import CompiledContract, clean_category

_NUMBER_TYPES = frozenset((int, float))
_DICT = {dict}
_REQUEST_ID_ATTR = operator.attrgetter("request_id")
_FEATURES, _REQUEST_ID = itertools.repeat("features"), itertools.repeat("request_id")


def _tuple_getter(names: list[str], getter=operator.itemgetter):
    """f -> tuple of f[name] (or of attributes, with `operator.attrgetter`) for names; never a bare value."""
    if len(names) == 1:
        one = getter(names[0])
        return lambda f: (one(f),)
    return getter(*names) if names else None


@dataclass
class ColumnBatch:
    """Validated rows in columns: clean values per contract feature, one request_id per row."""

    request_ids: list[str]
    columns: dict  # numeric: float64 array; categorical/ordinal: list of clean str | None
    ignored: dict[int, list[str]] = field(default_factory=dict)  # row -> extra fields
    renamed: dict[str, str] = field(default_factory=dict)  # raw field name -> feature (any row)

    @property
    def n(self) -> int:
        return len(self.request_ids)

    def take(self, idx: np.ndarray) -> dict:
        """The feature columns of rows `idx` (a canary split)."""
        out = {}
        for k, col in self.columns.items():
            out[k] = col[idx] if isinstance(col, np.ndarray) else [col[i] for i in idx.tolist()]
        return out


class ColumnarValidator:
    """Per-column twin of `churnops.speed.records.FastValidator` for lists of feature objects."""

    def __init__(self, compiled: CompiledContract, unknown_category: str = "reject"):
        self.compiled = compiled
        self.unknown_category = unknown_category
        self.numeric, self.categorical = [], []
        for rule in compiled.rules:
            if rule.shape == "number":
                self.numeric.append((rule.name, rule.lo, rule.hi))
            else:
                self.categorical.append((rule.name, rule))
        self.deferred = any(r.shape not in ("number", "category") for r in compiled.rules)
        self.names = compiled.names
        self.width = len(compiled.rules)
        self._get_numeric = _tuple_getter([n for n, _, _ in self.numeric])
        self._get_categorical = _tuple_getter([c[0] for c in self.categorical])
        self._attr_numeric = _tuple_getter([n for n, _, _ in self.numeric], operator.attrgetter)
        self._attr_each_categorical = [operator.attrgetter(c[0]) for c in self.categorical]
        self._lo = np.array([lo for _, lo, _ in self.numeric], dtype=np.float64)
        self._hi = np.array([hi for _, _, hi in self.numeric], dtype=np.float64)

        self._decoders = self._row_decoders() if not self.deferred else None

    def _row_decoders(self):
        """msgspec decoders for `[row, ...]` and `{"records": [row, ...]}` with exact contract rows."""
        fields = [(r.name, self.compiled.msgspec_type(r)) for r in self.compiled.rules]
        fields.append(("request_id", Optional[str], None))
        try:
            row = msgspec.defstruct("ContractRow", fields, forbid_unknown_fields=True)
        except (TypeError, ValueError):  # a feature name that cannot be a field name
            return None
        records = msgspec.defstruct("ContractRecords", [("records", list[row])], forbid_unknown_fields=True)
        return msgspec.json.Decoder(list[row]), msgspec.json.Decoder(records)

    def decode(self, raw: bytes) -> ColumnBatch | None:
        """Parse and check a body of exact contract rows in one pass; None: use `parse_json` + `__call__`."""
        if self._decoders is None or not raw:
            return None
        as_list, as_records = self._decoders
        try:
            head = raw.lstrip()[:1]
            rows = as_list.decode(raw) if head == b"[" else as_records.decode(raw).records if head == b"{" else None
        except (msgspec.DecodeError, ValueError, RecursionError):  # parse_json names the problem
            return None
        if not rows:
            return None
        n = len(rows)
        columns: dict = {}
        try:
            if self.numeric:  # fromiter over one flat stream: no list of n tuples for numpy to inspect
                k = len(self.numeric)
                flat = np.fromiter(itertools.chain.from_iterable(map(self._attr_numeric, rows)), np.float64, n * k)
                self._numeric_columns(flat.reshape(n, k), columns)
            if self.categorical:
                self._categorical_columns([list(map(get, rows)) for get in self._attr_each_categorical], columns)
        except ValueError:  # an unknown category: the row path names it
            return None
        rids = list(map(_REQUEST_ID_ATTR, rows))
        if rids.count(None) == n:
            return ColumnBatch(new_request_ids(n), columns, {})
        if not all(r is None or valid_request_id(r) for r in rids):
            return None
        return ColumnBatch(_fill_request_ids([r.strip() if r is not None else None for r in rids], n), columns, {})

    def _numeric_columns(self, arr: np.ndarray, columns: dict) -> None:
        """The checked n x k numeric matrix as one contiguous float64 array per feature."""
        by_column = arr.T.copy()  # one copy; each row of it is a contiguous column
        for j, (name, _, _) in enumerate(self.numeric):
            columns[name] = by_column[j]

    def _categorical_columns(self, cols, columns: dict) -> None:
        """Raw categorical columns, cleaned through their distinct values (ValueError: not acceptable)."""
        for (name, rule), col in zip(self.categorical, cols):
            mapping = {v: self._clean_category(v, rule) for v in set(col)}  # TypeError: unhashable
            columns[name] = (
                [mapping[v] for v in col]
                if any(k != v for k, v in mapping.items())
                else col
                if type(col) is list
                else list(col)
            )

    def _clean_category(self, v, rule):
        """Clean value of one distinct raw value; ValueError leaves the row path to name the problem."""
        if type(v) is not str:
            raise ValueError
        return clean_category(v, rule, self.unknown_category)

    def __call__(self, objs: list) -> ColumnBatch | None:
        n = len(objs)
        if not n or self.deferred:
            return None
        try:
            if set(map(type, objs)) != _DICT:
                return None
            feats, rids = objs, None
            if any(map(dict.__contains__, objs, _FEATURES)) or any(map(dict.__contains__, objs, _REQUEST_ID)):
                feats, rids = [], []
                for o in objs:
                    f = o.get("features", o) if "features" in o else o
                    if type(f) is not dict:
                        return None
                    rid = o.get("request_id")
                    if rid is not None:
                        if type(rid) is not str or not valid_request_id(rid):
                            return None
                        rid = rid.strip()
                    if f is o and "request_id" in o:
                        f = {k: v for k, v in o.items() if k != "request_id"}
                    feats.append(f)
                    rids.append(rid)
            columns: dict = {}
            if self.numeric:
                values = list(map(self._get_numeric, feats))  # KeyError: a missing field
                if not set(map(type, itertools.chain.from_iterable(values))) <= _NUMBER_TYPES:
                    return None
                arr = np.array(values, dtype=np.float64).reshape(n, len(self.numeric))  # OverflowError: huge int
                if not ((arr >= self._lo) & (arr <= self._hi)).all():  # NaN fails too
                    return None
                self._numeric_columns(arr, columns)
            if self.categorical:
                self._categorical_columns(zip(*map(self._get_categorical, feats)), columns)
        except (KeyError, TypeError, ValueError, OverflowError):
            return None
        ignored = {}
        if set(map(len, feats)) != {self.width}:
            feature_of = self.compiled.feature_of
            for i, f in enumerate(feats):
                if len(f) != self.width:
                    extra = [k for k in f if k not in self.names]
                    if any(feature_of(k) is not None for k in extra):  # a raw name: the row path renames
                        return None
                    ignored[i] = extra
        return ColumnBatch(_fill_request_ids(rids, n), columns, ignored)


def _fill_request_ids(rids: list | None, n: int) -> list[str]:
    """Supplied request_ids as they are; a new id for each row without one."""
    if rids is None or rids.count(None) == n:
        return new_request_ids(n)
    if None in rids:
        return [r if r is not None else new_request_id() for r in rids]
    return rids
