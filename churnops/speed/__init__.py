"""The speed code, in one place, behind one small interface (`FastPaths`).

The plain path is the reference and the specification: the Flask view, the contract's one
compiled validator (`churnops.validator`), ONNX or XGBoost's own predictor. Each fast path below gives exactly the plain path's answer (tests/serving/
test_fast_paths.py runs randomized valid and invalid input through both and compares status
codes and bodies) and defers to the plain path for anything it cannot prove it handles the same.
`FAST_PATHS=off` (`Settings.fast_paths`) turns all of them off at once.

| fast path | what it buys (measured) | relies on |
|---|---|---|
| `wsgi.FastPredict`: `POST /predict` (and the tabular and image `/v2/.../infer`) answered before Flask's request machinery | in-process 424 -> 248 µs of CPU per request (README, request path) | Flask's documented `app.wsgi_app` hook; errors re-run through the Flask view with the body re-attached |
| `records.FastValidator`: one record in one pass over the compiled rules | the common valid record without the reference's general checks | the rules' two wire shapes (number, category); anything else goes to the reference |
| `columnar.ColumnarValidator`: a batch checked per column; `.decode` parses exact contract rows with msgspec, checking types and ranges while parsing | batch 61,700-85,900 -> 76,100-115,800 rows/s with the keep-alive worker and the one-read body; 2.3 µs per row of parsing and checking (README) | msgspec (optional: without it the orjson + column path runs); numpy |
| `forest.Forest`: the booster's trees compiled with numba for matrices of `NATIVE_BATCH_MIN_ROWS` rows or more | 4.55 against 7.33 µs per row for XGBoost's predictor on 1,000 real rows, max difference 0.0 (bench/results/serve.json, `model_call`) | numba; checked against XGBoost's leaves at load, XGBoost kept when unsupported or different |

The HTTP server is not a fast path: granian serves the API whatever FAST_PATHS says (chosen by
measurement, bench/bench_servers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from churnops.speed.columnar import ColumnarValidator
from churnops.speed.records import FastValidator
from churnops.speed.wsgi import FastPredict

if TYPE_CHECKING:  # pragma: no cover
    from churnops.contract import DatasetContract
    from churnops.settings import Settings
    from churnops.speed.columnar import ColumnBatch
    from churnops.validator import RecordResult


def enabled(settings: Settings) -> bool:
    """Whether the fast paths are on (`FAST_PATHS`, default on)."""
    return settings.fast_paths == "on"


@dataclass
class FastPaths:
    """The fast paths of one server process for one contract; with `on=False`, the plain path."""

    on: bool
    record: Callable[[Any], RecordResult]  # one feature object -> RecordResult
    _columns: Any = None  # churnops.speed.columnar.ColumnarValidator when on

    @classmethod
    def build(cls, contract: DatasetContract, unknown_category: str, on: bool = True) -> FastPaths:
        compiled = contract.validator()
        if not on:
            return cls(False, lambda rec: compiled.validate(rec, unknown_category))  # type: ignore[arg-type]

        return cls(True, FastValidator(compiled, unknown_category), ColumnarValidator(compiled, unknown_category))

    @classmethod
    def from_settings(cls, contract: DatasetContract, settings: Settings) -> FastPaths:
        return cls.build(contract, settings.unknown_category, enabled(settings))

    def decode_batch(self, raw: bytes) -> ColumnBatch | None:
        """A batch body of exact contract rows, parsed and checked in one pass (None: use the plain path)."""
        return self._columns.decode(raw) if self._columns is not None else None

    def check_batch(self, objs: list) -> ColumnBatch | None:
        """Parsed batch rows checked per column (None: check them row by row)."""
        return self._columns(objs) if self._columns is not None else None

    def wrap_wsgi(
        self,
        app,
        handler: Callable[[bytes], bytes],
        max_body_bytes: int,
        on_ok: Callable[[], None],
        accept: Callable[[dict], bool] | None = None,
    ):
        """`app` with `POST /predict` answered by `handler` before Flask (unchanged when off); a request
        `accept(environ)` declines (wrong Host or content type) goes to Flask, which answers it."""
        if not self.on:
            return app

        return FastPredict(app, handler, max_body_bytes, on_ok, accept=accept)

    def wrap_wsgi_routes(
        self,
        app,
        match: Callable[[str], Callable[[bytes], bytes] | None],
        max_body_bytes: int,
        accept: Callable[[dict], bool] | None = None,
    ):
        """`app` with every `POST` path that `match` gives a handler for answered by it before Flask (the
        handler counts its own answer); unchanged when off."""
        if not self.on:
            return app
        return FastPredict(app, None, max_body_bytes, lambda: None, accept=accept, match=match)  # type: ignore[arg-type]
