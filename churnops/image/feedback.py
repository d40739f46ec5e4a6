"""`POST /feedback` on an image server: the true class of a served image, as a class index or name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ImageFeedback:
    """The feedback part of a task object (`churnops.tasks`) for an image contract: outcome = class index."""

    name: str = "image_classification"

    def parse_feedback(self, data: dict, contract) -> tuple[Any, dict[str, str], str]:
        """(class index, problems by field, answer key) of a /feedback body: `outcome` (or `actual`) a
        class index 0..K-1 or a class name, or `label` a class name."""
        classes = [str(c) for c in contract.classes]
        key = next((k for k in ("outcome", "actual", "label") if k in data), "outcome")
        v = data.get(key)
        want = f"expected a class index 0..{len(classes) - 1} or a class name {classes}"
        if isinstance(v, bool) or v is None:
            return None, {key: f"{want}, got {'null' if v is None else repr(v)}"}, "outcome"
        if isinstance(v, str):
            if v.strip() in classes:
                return classes.index(v.strip()), {}, "outcome"
            return None, {key: f"unknown class {v[:40]!r}; {want}"}, "outcome"
        if isinstance(v, (int, float)) and float(v).is_integer() and 0 <= int(v) < len(classes):
            return int(v), {}, "outcome"
        shown = repr(v)[:40] if isinstance(v, (int, float)) else type(v).__name__
        return None, {key: f"{want}, got {shown}"}, "outcome"
