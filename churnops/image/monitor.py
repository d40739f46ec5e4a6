"""Image monitoring: the training reference of an image model and the window summary of an image server.

* Reference: at training time `reference_payload` keeps the logged image summary
  (`churnops.image.summary.summary`, the function serving logs with) and the model's predicted
  class of a seeded sample of the data set's images; `churnops/image/train.py` logs it as the run
  artifact `image_reference.json`. `load_image_reference` downloads it once per run into
  `<state_dir>/reference-cache/<run_id>/` (the tabular reference's cache), `ImageReferences` does
  so in a background thread for `/drift`.
* Window: `image_window` is what `churnops.monitoring.window.compute` returns for an image
  contract (its one image monitoring hook): rows, per-channel Wasserstein of the window's channel
  means against the reference's, the MMD permutation test on the embedding projections
  (`churnops.image.drift`), predicted-class drift (PSI + chi-square on class counts), realized
  accuracy on the rows with `/feedback` (outcome = class index), a status from the settings'
  thresholds, and a few thumbnails of each side. It fills `drift` / `performance` / `verdict`
  like a tabular window (signals in place of features), so the trigger reads it unchanged.
* Report: `image_section_html` renders those numbers and thumbnails as one offline HTML page.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from churnops.image.drift import channel_wasserstein, mmd_test, summaries
from churnops.image.formats import DecodedImage, sniff
from churnops.image.summary import summary
from churnops.monitoring.drift import CRITICAL, OK, WARN, psi
from churnops.monitoring.reading import choose_reference, jsonable, read_window
from churnops.monitoring.reference import BackgroundReferences, ReferenceUnavailable, fetch_artifacts

log = logging.getLogger(__name__)

REFERENCE_FILE = "image_reference.json"
REFERENCE_ROWS = 300  # images of the data set summarised into the reference
THUMBNAILS = 8  # thumbnails of each side shown in the report
CHANNELS = ("r", "g", "b")
RANK = {OK: 0, WARN: 1, CRITICAL: 2}


# ---- the reference ---------------------------------------------------------------------------------------


def reference_payload(files, X: np.ndarray, onnx_bytes: bytes, classes: list[str], seed: int = 0) -> dict:
    """Summaries (as serving logs them) and predicted classes of a seeded sample of the data set's images.

    `files[i]` (`ImageFile`) is the file behind the model input `X[i]` (3, H, W).
    """
    from churnops.image.model import onnx_session

    rng = np.random.default_rng(seed)
    idx = np.arange(len(files))
    if len(idx) > REFERENCE_ROWS:
        idx = np.sort(rng.choice(idx, REFERENCE_ROWS, replace=False))
    sess = onnx_session(onnx_bytes, threads=1)
    p, z = sess.run(["probabilities", "embedding"], {"image": np.ascontiguousarray(X[idx], dtype=np.float32)})
    records = []
    for k, i in enumerate(idx):
        data = files[i].path.read_bytes()
        img = DecodedImage(
            x=X[i],
            content_type=sniff(data) or "image",
            sha256=hashlib.sha256(data).hexdigest(),
            nbytes=len(data),
            width=int(X.shape[3]),
            height=int(X.shape[2]),
        )
        records.append(
            {
                "_id": files[i].rel,
                "features": summary(img, z[k]),
                "decision": int(p[k].argmax()),
                "label": int(files[i].label),
            }
        )
    return {"classes": [str(c) for c in classes], "rows": len(records), "seed": seed, "records": records}


@dataclass(frozen=True)
class ImageReference:
    run_id: str
    classes: list[str]
    records: list[dict]


def reference_from_folder(folder: Path, run_id: str | None = None) -> ImageReference:
    p = Path(folder) / REFERENCE_FILE
    if not p.exists():
        raise ReferenceUnavailable(f"{p} not found")
    raw = json.loads(p.read_text())
    return ImageReference(run_id or Path(folder).name, [str(c) for c in raw["classes"]], list(raw["records"]))


def fetch_image_reference(run_id: str, settings, cache_root: Path | None = None) -> Path:
    """Download `image_reference.json` of `run_id` into the reference cache (renamed into place)."""
    hint = " (image models registered before image monitoring have no reference: retrain)"
    return fetch_artifacts(run_id, settings, REFERENCE_FILE, cache_root=cache_root, hint=hint)


def load_image_reference(run_id: str, settings, cache_root: Path | None = None) -> ImageReference:
    return reference_from_folder(fetch_image_reference(run_id, settings, cache_root), run_id)


class ImageReferences(BackgroundReferences):
    """`BackgroundReferences` for image models: the same cache and background thread, `image_reference.json`."""

    def _cached(self, folder: Path, run_id: str):
        return reference_from_folder(folder, run_id) if (folder / REFERENCE_FILE).exists() else None

    def _download(self, run_id: str) -> None:
        fetch_image_reference(run_id, self.settings, self.cache_root)


# ---- the window ------------------------------------------------------------------------------------------


def _level(value: float | None, warn: float, critical: float) -> str:
    if value is None or not np.isfinite(value):
        return OK
    return CRITICAL if value >= critical else WARN if value >= warn else OK


def class_drift(ref_classes: list[int], cur_classes: list[int], n_classes: int, settings) -> dict:
    """PSI and chi-square test of the predicted-class counts (current against the reference's proportions)."""
    from scipy.stats import chisquare

    rc = np.bincount(np.asarray(ref_classes, dtype=int), minlength=n_classes).astype(float)
    cc = np.bincount(np.asarray(cur_classes, dtype=int), minlength=n_classes).astype(float)
    rp, cp = rc / max(rc.sum(), 1), cc / max(cc.sum(), 1)
    value = psi(rp, cp)
    smoothed = (rc + 0.5) / (rc + 0.5).sum()  # a class the reference never predicted stays testable
    p_value = float(chisquare(cc, smoothed * cc.sum()).pvalue) if cc.sum() else float("nan")
    significant = np.isfinite(p_value) and p_value < settings.drift_p_value
    status = _level(value, settings.psi_warn, settings.psi_critical) if significant else OK
    return {
        "psi": value,
        "p_value": p_value,
        "status": status,
        "reference_props": [round(float(v), 6) for v in rp],
        "current_props": [round(float(v), 6) for v in cp],
    }


def performance_reasons(overall: dict, settings, min_labelled: int) -> list[str]:
    """Why an image model's realized performance should start training: accuracy below IMAGE_ACCURACY_FLOOR."""
    acc, n = overall.get("accuracy"), overall.get("n", 0)
    if acc is not None and n >= min_labelled and acc < settings.image_accuracy_floor:
        return [f"realized accuracy {acc:.3f} < floor {settings.image_accuracy_floor} on {n} labelled predictions"]
    return []


def realized_accuracy(records: list[dict], feedback: list[dict]) -> dict:
    """Accuracy of the predicted class on the rows whose request got a class index from /feedback (last wins)."""
    outcome: dict[str, tuple[float, int]] = {}
    for f in feedback:
        try:
            ts, o = float(f.get("ts") or 0), int(f["outcome"])
        except (KeyError, TypeError, ValueError):
            continue
        rid = str(f.get("request_id"))
        if rid not in outcome or ts >= outcome[rid][0]:
            outcome[rid] = (ts, o)
    groups: dict[tuple[str, str], list[bool]] = {}
    for r in records:
        hit = outcome.get(str(r.get("request_id")))
        if hit is not None and r.get("decision") is not None:
            groups.setdefault((str(r.get("model_version")), str(r.get("route"))), []).append(
                int(r["decision"]) == hit[1]
            )
    allv = [v for g in groups.values() for v in g]
    if not allv:
        return {"task": "image_classification", "n": 0, "overall": None, "by_model": []}
    return {
        "task": "image_classification",
        "n": len(allv),
        "overall": {"n": len(allv), "accuracy": float(np.mean(allv))},
        "by_model": [
            {"model_version": v, "route": rt, "n": len(g), "accuracy": float(np.mean(g))}
            for (v, rt), g in sorted(groups.items())
        ],
    }


def _thumbs(records: list[dict], k: int = THUMBNAILS, seed: int = 0) -> list[str]:
    have = [r for r in records if isinstance((r.get("features") or {}).get("thumbnail_png"), str)]
    if len(have) > k:
        pick = np.sort(np.random.default_rng(seed).choice(len(have), k, replace=False))
        have = [have[i] for i in pick]
    return [r["features"]["thumbnail_png"] for r in have]


def drift_of(reference: ImageReference, records: list[dict], settings) -> dict:
    """The image drift numbers of a window's records against the reference, with a status per signal."""
    rm, re_ = summaries(reference.records, "reference")
    cm, ce = summaries(records, "current")
    w = dict(zip(CHANNELS, channel_wasserstein(rm, cm)))
    rng = np.random.default_rng(settings.seed)
    cap = settings.image_mmd_max_rows

    def sub(a: np.ndarray) -> np.ndarray:
        return a if len(a) <= cap else a[np.sort(rng.choice(len(a), cap, replace=False))]

    mmd = mmd_test(sub(re_), sub(ce), settings.image_mmd_permutations, settings.seed)
    signals = {
        f"channel_{c}": _level(v, settings.image_wasserstein_warn, settings.image_wasserstein_critical)
        for c, v in w.items()
    }
    signals["embedding_mmd"] = CRITICAL if mmd["p_value"] < settings.image_mmd_p_value else OK
    classes = class_drift(
        [r["decision"] for r in reference.records],
        [int(r["decision"]) for r in records if r.get("decision") is not None],
        len(reference.classes),
        settings,
    )
    return {"channel_wasserstein": w, "embedding_mmd": mmd, "classes": classes, "signals": signals}


def image_window(
    store,
    settings,
    contract,
    hours: float,
    now: float | None = None,
    reference=None,
    references=None,
    max_rows: int | None = None,
):
    """The window summary of an image server (see the module docstring); plain JSON values; `max_rows`
    bounds the rows read (the newest)."""
    read = read_window(
        store, settings, hours, now, max_rows, keep=lambda r: bool((r.get("features") or {}).get("sha256"))
    )
    start, now, records = read.start, read.end, read.records
    out: dict = {"task": "image_classification", **read.header}
    if not read.enough:
        return jsonable(out)
    reference = choose_reference(
        settings, records, reference, references, lambda run_id: load_image_reference(run_id, settings)
    )
    d = drift_of(reference, records, settings)
    perf = realized_accuracy(records, store.find_feedback(start=start))
    signals = dict(d["signals"], predicted_class=d["classes"]["status"])
    status = max(signals.values(), key=RANK.__getitem__)
    critical = sorted(k for k, v in signals.items() if v == CRITICAL)
    out.update(
        status=status,
        reference_run_id=reference.run_id,
        image={
            **{k: d[k] for k in ("channel_wasserstein", "embedding_mmd", "classes", "signals")},
            "classes_names": reference.classes,
            "thumbnails": {"reference": _thumbs(reference.records), "current": _thumbs(records, seed=int(now))},
        },
        drift={
            "status": status,
            "n_critical": len(critical),
            "n_warn": sum(v == WARN for v in signals.values()),
            "critical_features": critical,
            "drifted_features": sorted(k for k, v in signals.items() if v != OK),
            "max_psi": d["classes"]["psi"],
            "features": {},
            "prediction": {k: d["classes"][k] for k in ("psi", "p_value", "status")},
        },
        performance=perf,
        verdict={"drift": status, "critical_features": critical, "prediction": d["classes"]["status"]},
    )
    return jsonable(out)


# ---- the report section ----------------------------------------------------------------------------------


def _fmt(v, spec: str = ".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def image_section_html(summary: dict, title: str) -> str:
    """One self-contained HTML page (no script, no CDN) with the image drift section of a window summary."""
    img, e = summary["image"], html.escape
    w, mmd, cls = img["channel_wasserstein"], img["embedding_mmd"], img["classes"]
    sig = img["signals"]
    rows = "".join(
        f"<tr><td>channel {c.upper()} Wasserstein</td><td>{_fmt(w[c])}</td><td>{e(sig[f'channel_{c}'])}</td></tr>"
        for c in CHANNELS
    )
    rows += (
        f"<tr><td>embedding MMD&sup2; (p-value, {mmd['n_permutations']} permutations)</td>"
        f"<td>{_fmt(mmd['mmd2'], '.5f')} (p={_fmt(mmd['p_value'], '.3g')})</td><td>{e(sig['embedding_mmd'])}</td></tr>"
        f"<tr><td>predicted-class PSI (chi-square p-value)</td><td>{_fmt(cls['psi'])} "
        f"(p={_fmt(cls['p_value'], '.3g')})</td><td>{e(cls['status'])}</td></tr>"
    )
    acc = (summary.get("performance") or {}).get("overall") or {}
    acc_txt = f"{acc['accuracy']:.3f} on {acc['n']} labelled" if acc else "no feedback yet"
    classes = "".join(
        f"<tr><td>{e(str(c))}</td><td>{rp:.3f}</td><td>{cp:.3f}</td></tr>"
        for c, rp, cp in zip(img["classes_names"], cls["reference_props"], cls["current_props"])
    )

    def strip(name: str) -> str:
        thumbs = img["thumbnails"][name]
        if not thumbs:
            return "<p>no thumbnails logged</p>"
        return "".join(
            f'<img class="thumb" alt="{name} sample {i}" src="data:image/png;base64,{t}">' for i, t in enumerate(thumbs)
        )

    win = summary["window"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
img.thumb{{width:64px;height:64px;image-rendering:pixelated;margin:2px;border:1px solid #999}}</style></head>
<body><h1>{e(title)}</h1>
<section id="image-drift"><h2>Image drift</h2>
<p>status <b>{e(summary["status"])}</b>; {summary["n"]} predictions in the window of {win["hours"]} h;
reference run {e(str(summary.get("reference_run_id")))}; realized accuracy {e(acc_txt)}</p>
<table><tr><th>signal</th><th>value</th><th>status</th></tr>{rows}</table>
<h3>Predicted classes</h3><table><tr><th>class</th><th>reference</th><th>current</th></tr>{classes}</table>
<h3>Reference samples</h3><div id="thumbs-reference">{strip("reference")}</div>
<h3>Current window samples</h3><div id="thumbs-current">{strip("current")}</div>
<p>Thumbnails are the 16x16 derivatives kept in the logged summaries, not the images.</p>
</section></body></html>
"""
