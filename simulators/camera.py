"""Image traffic with camera drift: raw-digit captures through the simulated camera, drifted, as DNG.

For an image server (DATASET=<image contract>) the simulators send captures of scikit-learn's
digits rendered by `churnops.image.sensor` (indices seeded) to `POST /predict/image` (HTTP) or as
S3 objects named by `{"request_id", "image_uri"}` records on the input stream (Kinesis), and post
the true class index to `POST /feedback` after the feedback delay. Camera drift changes the
simulated camera, not the file's metadata (the DNG still states the nominal camera, as a camera
whose sensor ages or whose light changes would):

* ``noise``          read noise up to x25 and a tenth of the electrons per DN (more shot noise): a
                     high-ISO capture in dim light
* ``white_balance``  the scene light turns warm: red sensitivity up to +40 %, blue -30 %, while
                     the DNG's AsShotNeutral stays the nominal one (the ISP balances the wrong way)
* ``exposure``       up to +1 stop (twice the light)

Strength follows `--drift-mode` (sudden from the onset, or gradual) like the tabular drifts.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import httpx
import numpy as np

from churnops.aws import client as aws_client
from churnops.image.sensor import _digits, expose, optics, scene, write_dng
from simulators.traffic import FeedbackSender, Planned, RunStats, check_loopback, planned_count, run_paced, strengths

CAMERA_DRIFTS = ("noise", "white_balance", "exposure")


def parse_camera_drift(value: str | list[str] | None) -> list[str]:
    """`noise,exposure` -> ["noise", "exposure"]; unknown kinds are refused by name."""
    if not value:
        return []
    kinds = [k.strip().lower() for k in (value.split(",") if isinstance(value, str) else value) if k.strip()]
    bad = [k for k in kinds if k not in CAMERA_DRIFTS and k != "none"]
    if bad:
        raise ValueError(f"unknown camera drift kind(s) {bad} for an image server; choose from {list(CAMERA_DRIFTS)}")
    return [k for k in kinds if k != "none"]


def drifted_sensor(spec, kinds: list[str], strength: float):
    """The contract's `SensorSpec` with camera drift `kinds` applied at `strength` in [0, 1]."""
    s = float(np.clip(strength, 0.0, 1.0))
    upd: dict = {}
    if "noise" in kinds:
        upd["read_noise_dn"] = spec.read_noise_dn * (1 + 24 * s)
        upd["electrons_per_dn"] = spec.electrons_per_dn * (1 - 0.9 * s)
    if "white_balance" in kinds:
        r, g, b = spec.gains
        upd["gains"] = (r * (1 + 0.4 * s), g, b * (1 - 0.3 * s))
    if "exposure" in kinds:
        upd["exposure"] = spec.exposure * 2.0**s
    return spec.model_copy(update=upd)


def capture(index: int, contract, seed: int, kinds: list[str], strength: float) -> tuple[bytes, int]:
    """(DNG bytes, true class index) of digit `index` seen by the drifted camera; deterministic."""
    d = _digits()
    rng = np.random.default_rng([seed, index])
    size = (contract.image.height, contract.image.width)
    rgb = optics(scene(d.images[index], size, rng), contract.sensor.blur_sigma)
    raw = expose(rgb, drifted_sensor(contract.sensor, kinds, strength), rng)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "capture.dng"
        write_dng(p, raw, contract.sensor)  # the file states the nominal camera
        return p.read_bytes(), int(d.target[index])


def plan_captures(
    n: int, seed: int, drift: list[str], mode: str = "sudden", onset: float = 0.0, prefix: str = "img"
) -> list[Planned]:
    """`n` seeded digit indices with their drift strength (features = {"index": i})."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(_digits().target), n)
    st = strengths(n, mode, onset) if drift else np.zeros(n)
    run = uuid.UUID(int=int(rng.integers(0, 2**63))).hex[-8:]
    return [
        Planned(f"{prefix}-{run}-{k:07d}", {"index": int(i)}, int(_digits().target[i]), float(x))
        for k, (i, x) in enumerate(zip(idx, st))
    ]


def run_camera_http(
    settings,
    contract,
    *,
    rate: float,
    seconds: float | None,
    count: int | None,
    seed: int,
    drift: list[str],
    drift_mode: str = "sudden",
    feedback_delay_s: float = 5.0,
    feedback: bool = True,
    api_url: str | None = None,
    stop=lambda: False,
    allow_remote: bool = False,
    onset: float = 0.0,
    **_,
) -> RunStats:
    """DNG captures to `POST /predict/image`; the true class to `/feedback` later."""
    api = (api_url or settings.api_url).rstrip("/")
    check_loopback(api, "API", allow_remote)
    records = plan_captures(planned_count(rate, seconds, count), seed, drift, drift_mode, onset, "img-http")
    stats = RunStats("http", drift=_drift_info(drift, drift_mode, records))
    client = httpx.Client(base_url=api, timeout=10.0)
    fb = FeedbackSender(api) if feedback else None

    def send(batch: list[Planned]):
        out = []
        for rec in batch:
            data, _ = capture(rec.features["index"], contract, seed, drift, rec.strength)
            try:
                r = client.post(
                    "/predict/image",
                    content=data,
                    headers={"Content-Type": "image/x-adobe-dng", "X-Request-ID": rec.request_id},
                )
                out.append((rec, f"POST /predict/image {r.status_code}", r.status_code == 200))
            except httpx.HTTPError as exc:
                out.append((rec, f"POST /predict/image error:{type(exc).__name__}", False))
        return out

    try:
        return run_paced(records, send, stats, rate, None if count else seconds, fb, feedback_delay_s, stop)
    finally:
        client.close()
        if fb:
            fb.close()


def run_camera_kinesis(
    settings,
    contract,
    *,
    rate: float,
    seconds: float | None,
    count: int | None,
    seed: int,
    drift: list[str],
    drift_mode: str = "sudden",
    feedback_delay_s: float = 5.0,
    feedback: bool = True,
    api_url: str | None = None,
    stream: str | None = None,
    stop=lambda: False,
    allow_remote: bool = False,
    onset: float = 0.0,
    **_,
) -> RunStats:
    """DNG captures as S3 objects (`BUCKET`/simulated-images/...) named by `image_uri` stream records."""
    api = (api_url or settings.api_url).rstrip("/")
    check_loopback(settings.aws_endpoint_url, "AWS endpoint", allow_remote)
    if feedback:
        check_loopback(api, "API", allow_remote)
    stream = stream or settings.input_stream
    records = plan_captures(planned_count(rate, seconds, count), seed + 1, drift, drift_mode, onset, "img-kin")
    stats = RunStats("kinesis", drift=_drift_info(drift, drift_mode, records) | {"stream": stream})
    s3, kin = aws_client("s3", settings), aws_client("kinesis", settings)
    fb = FeedbackSender(api) if feedback else None

    def send(batch: list[Planned]):
        out, entries, sent = [], [], []
        for rec in batch:
            data, _ = capture(rec.features["index"], contract, seed + 1, drift, rec.strength)
            key = f"simulated-images/{rec.request_id}.dng"
            try:
                s3.put_object(Bucket=settings.bucket, Key=key, Body=data, ContentType="image/x-adobe-dng")
            except Exception as exc:
                out.append((rec, f"s3 put error:{type(exc).__name__}", False))
                continue
            uri = f"s3://{settings.bucket}/{key}"
            entries.append(
                {
                    "Data": json.dumps({"request_id": rec.request_id, "image_uri": uri}).encode(),
                    "PartitionKey": rec.request_id,
                }
            )
            sent.append(rec)
        if not entries:
            return out
        try:
            resp = kin.put_records(StreamName=stream, Records=entries)
        except Exception as exc:
            return out + [(r, f"kinesis put error:{type(exc).__name__}", False) for r in sent]
        for r, res in zip(sent, resp["Records"]):
            ok = not res.get("ErrorCode")
            out.append((r, "kinesis put ok" if ok else f"kinesis put {res['ErrorCode']}", ok))
        return out

    try:
        return run_paced(
            records, send, stats, rate, None if count else seconds, fb, feedback_delay_s, stop, max_batch=100
        )
    finally:
        if fb:
            fb.close()


def _drift_info(drift: list[str], mode: str, records: list[Planned]) -> dict:
    return {
        "kinds": drift,
        "mode": mode,
        "rows_changed": {k: sum(r.strength > 0 for r in records) for k in drift},
        "customers": "raw digits (simulated camera)",
    }
