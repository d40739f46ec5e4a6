"""Canary routing and atomic reload for the HTTP API and the stream consumer (loading: serving/loading.py).

The champion is what `churnops.registry.resolve_model_uri` names (RUN_ID pin, MODEL_URI, or
`models:/<name>@champion`). With `CANARY_FRACTION > 0` and a `challenger` alias on a different
run, the challenger is loaded too and a request goes to it when sha256(request_id) mapped to
[0, 1) falls below the fraction: deterministic, so the same id always takes the same route.
Canary traffic only ever reaches a registered version of this model whose governance outcome is
one of `churnops.governance.CANARY_OUTCOMES` (`awaiting approval`: every rule passed, a person has
not decided yet; `promoted`); a `blocked`, `rejected`, `expired` or untagged version, whether named
by the alias or by a reload's `challenger_uri`, is not loaded and the champion takes all traffic.

A `ModelSet` (champion + optional challenger) is immutable; a reload builds a complete new one
and swaps one reference, so a request sees either the old set or the new one, never a mix,
and a failed reload leaves the old set serving. `submit_reload` runs a reload in a background
thread (MLflow is never called on a request thread) and records its status in
`<state_dir>/reloads/<id>.json` (pending / loaded / failed with the reason). Under gunicorn a reload reaches one worker;
it writes the accepted target to `<state_dir>/serving-model.json` and every other process
(workers, consumer) polls that file and loads the same target.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import threading
import time
import uuid
from pathlib import Path

import psutil

from churnops.governance import CANARY_OUTCOMES
from churnops.model_line import resolved
from churnops.redact import redact
from churnops.registry import alias_version, client, resolve_model_uri
from churnops.settings import Settings, get_settings
from churnops.settings import get_settings as gs
from serving.generation import next_generation, publish
from serving.loading import (  # noqa: F401  (re-exported: their old home)
    LoadedModel,
    ModelLoadError,
    ModelSet,
    load_model,
    route_fraction,
)

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


PENDING, LOADED, FAILED = "pending", "loaded", "failed"
JOB_ID = re.compile(r"[0-9a-f]{32}")
KEEP_JOBS = 100


class ReloadSuperseded(RuntimeError):
    """A reload finished after a newer one (of another process) was published; the newer one serves."""


class ReloadBusy(RuntimeError):
    """A reload of this process is still pending; `job` is that reload."""

    def __init__(self, job: dict):
        super().__init__(f"reload {job['id']} is still pending")
        self.job = job


def challenger_uri(s: Settings, champion_run_id: str) -> str | None:
    """`models:/<name>/<version>` of the challenger when canary is on and it differs from the champion."""
    if s.canary_fraction <= 0:
        return None

    mv = alias_version(s.model_name, CHALLENGER, s)
    if mv is None or mv.run_id == champion_run_id:
        return None
    why = canary_refusal(s, str(mv.version), (mv.tags or {}).get("outcome"))
    if why:
        log.warning("%s: champion only", why)
        return None
    return f"models:/{s.model_name}/{mv.version}"


def canary_refusal(s: Settings, version: str | None, outcome: str | None = None) -> str | None:
    """Why `version` of the model may not take canary traffic (None: it may). `outcome`: the version's
    outcome tag when the caller has it, else read from the registry."""
    if version is None:
        return "challenger is not a registered version of this model (no governance outcome): no canary"
    if outcome is None:
        try:
            outcome = (client(s).get_model_version(s.model_name, str(version)).tags or {}).get("outcome")
        except Exception as exc:
            return f"challenger {s.model_name} v{version}: outcome unknown ({redact(exc)}): no canary"
    if outcome not in CANARY_OUTCOMES:
        return f"challenger {s.model_name} v{version} has outcome {outcome!r}, not one of {list(CANARY_OUTCOMES)}: no canary"
    return None


def build_model_set(
    s: Settings, champion: str | None = None, challenger: str | None | bool = True, generation: int = 0
) -> ModelSet:
    """Load champion (`champion` or the settings' pin) and, when canary applies, the challenger.

    `challenger=True` resolves the `challenger` alias; a string is a URI; None/False: none.
    """
    champ = load_model(champion or resolve_model_uri(s), CHAMPION, s)
    ch_uri = challenger_uri(s, champ.run_id) if challenger is True else (challenger or None)
    chall = None
    if ch_uri and s.canary_fraction > 0:
        chall = load_model(ch_uri, CHALLENGER, s)
        why = None if chall.run_id == champ.run_id else canary_refusal(s, chall.version)
        if why:
            log.warning("%s: champion only", why)
        if chall.run_id == champ.run_id or why:
            chall = None
    return ModelSet(champ, chall, float(s.canary_fraction), generation)


# ---- the per-process holder -----------------------------------------------------------------------


class ModelManager:
    """Holds the current `ModelSet`; loads in the background; reloads atomically."""

    def __init__(self, settings: Settings | None = None, state_file: Path | None = None, metrics=None):
        self.settings = resolved(settings or get_settings())  # the data set's model line
        resolve_model_uri(self.settings)  # MODEL_URI / RUN_ID outside the allowlist: refuse at startup
        self.state_file = state_file or shared_state_file(self.settings)
        self.current: ModelSet | None = None
        self.last_error: str | None = None
        self.metrics = metrics
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._seen_state: tuple | None = None
        self._jobs_lock = threading.Lock()
        self._job: dict | None = None
        self.freeze_gc = True

    @property
    def ready(self) -> bool:
        return self.current is not None

    def _target(self) -> tuple[str | None, object, int]:
        """(champion uri, challenger spec, generation) from the shared state file, else settings."""
        st = self._read_state()
        if st:
            return (
                st.get("champion"),
                st.get("challenger") if "challenger" in st else True,
                int(st.get("generation", 0)),
            )
        return None, True, 0

    def _read_state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def load_initial(self) -> ModelSet:
        champ, chall, gen = self._target()
        ms = build_model_set(self.settings, champ, chall, gen)
        self._install(ms)
        return ms

    def start_background(self, retry_s: float = 2.0, watch_s: float = 1.0) -> threading.Thread:
        """Load at start (retrying until it works), then follow reloads made by other processes."""

        def run():
            delay = retry_s
            while not self._stop.is_set() and self.current is None:
                try:
                    self.load_initial()
                except Exception as exc:
                    self.last_error = redact(f"{type(exc).__name__}: {exc}")
                    log.warning("model not loaded yet (%s); retrying in %.0f s", self.last_error, delay)
                    self._stop.wait(delay)
                    delay = min(delay * 1.5, 30.0)
            last_alias_poll = time.monotonic()
            while not self._stop.wait(watch_s):
                self.follow_state()
                if time.monotonic() - last_alias_poll >= self.settings.alias_poll_s:
                    last_alias_poll = time.monotonic()
                    try:
                        self.follow_alias()
                    except Exception as exc:  # registry down: keep serving what is loaded
                        log.warning("could not follow the registry alias: %s", exc)

        t = threading.Thread(target=run, name="model-loader", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self._stop.set()

    def follow_state(self) -> None:
        st = self._read_state()
        if not st or self.current is None or int(st.get("generation", 0)) <= self.current.generation:
            return
        key = (st.get("generation"), st.get("champion"), st.get("challenger"))
        if key == self._seen_state:
            return
        self._seen_state = key
        try:
            with self._reload_lock:
                ms = build_model_set(self.settings, st.get("champion"), st.get("challenger"), int(st["generation"]))
                self._install(ms)
            log.info("followed reload to generation %s (%s)", st["generation"], st.get("champion"))
        except Exception as exc:
            log.warning("could not follow reload generation %s: %s", st.get("generation"), redact(exc))

    def follow_alias(self) -> bool:
        """When serving `models:/<name>@<alias>`, load the version the alias points to now.

        One registry call per poll; a promotion or rollback is served within `alias_poll_s` (plus
        the load), the new set swapped in atomically so no request fails. RUN_ID and version pins
        are never moved. Returns True when it switched.
        """
        ms = self.current
        uri = ms.champion.uri if ms is not None else ""
        if not uri.startswith("models:/") or "@" not in uri:
            return False
        name, alias = uri[len("models:/") :].split("@", 1)
        mv = alias_version(name, alias, self.settings)
        if mv is None or str(mv.version) == str(ms.champion.version):
            return False
        with self._reload_lock:
            new = build_model_set(self.settings, uri, True, ms.generation)
            if self.current is not ms:  # an admin reload won meanwhile
                return False
            self._install(new)
        log.info("followed %s to v%s (was v%s)", uri, new.champion.version, ms.champion.version)
        return True

    def reload(self, champion: str | None = None, challenger: str | None | bool = True) -> ModelSet:
        """Load a complete new set and swap it in; on any error the old set keeps serving."""
        with self._reload_lock:
            # a number no other process's reload has (serving/generation.py: a counter under a file lock)
            gen = next_generation(
                self.state_file.parent, self.state_file, self.current.generation if self.current else 0
            )
            try:
                if champion is None:
                    gs.cache_clear()  # pick up a new RUN_ID pinned in .env.local
                    self.settings = gs()
                ms = build_model_set(self.settings, champion, challenger, gen)
            except Exception:
                if self.metrics:
                    self.metrics.model_reloads.labels("failed").inc()
                raise
            newer = self._publish(ms)
            if newer is not None:  # a later reload (another worker) was published first: it wins everywhere
                if self.metrics:
                    self.metrics.model_reloads.labels("failed").inc()
                raise ReloadSuperseded(
                    f"superseded by the newer reload of generation {newer.get('generation')} "
                    f"({redact(newer.get('champion'))}); that one is served"
                )
            if self.metrics:
                self.metrics.model_reloads.labels("ok").inc()
            return ms

    # ---- background reloads (POST /model/reload answers 202; GET /model/reload/<id> reads the job) ----

    def submit_reload(self, champion: str | None = None, challenger: str | None | bool = True) -> dict:
        """Start `reload` in a background thread; returns the job (`status` pending).

        The job is written to `<state_dir>/reloads/<id>.json`, so any worker can answer its
        status. Raises `ReloadBusy` while a job of this process is still pending.
        """
        with self._jobs_lock:
            if self._job is not None and self._job["status"] == PENDING:
                raise ReloadBusy(dict(self._job))
            job = {
                "id": uuid.uuid4().hex,
                "status": PENDING,
                "champion": champion,
                "challenger": challenger if challenger is not True else "alias",
                "pid": os.getpid(),
                "submitted_at": time.time(),
                "finished_at": None,
                "generation": None,
                "reason": None,
            }
            self._job = job
            self._write_job(job)
        threading.Thread(
            target=self._run_job, args=(job, champion, challenger), name="model-reload", daemon=True
        ).start()
        return dict(job)

    def _run_job(self, job: dict, champion: str | None, challenger: str | None | bool) -> None:
        try:
            ms = self.reload(champion, challenger)
            update = {
                "status": LOADED,
                "generation": ms.generation,
                "champion": ms.champion.uri,
                "run_id": ms.champion.run_id,
                "version": ms.champion.version,
                "challenger": ms.challenger.uri if ms.challenger else None,
            }
        except Exception as exc:
            reason = redact(f"{type(exc).__name__}: {exc}")[:600]
            log.warning("reload %s failed, previous model still serving: %s", job["id"], reason)
            update = {"status": FAILED, "reason": reason}
        with self._jobs_lock:
            job.update(update, finished_at=time.time())
            self._write_job(job)

    def _jobs_dir(self) -> Path:
        return self.state_file.parent / "reloads"

    def _write_job(self, job: dict) -> None:
        d = self._jobs_dir()
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / f".{job['id']}.{os.getpid()}"
            tmp.write_text(json.dumps(job))
            os.replace(tmp, d / f"{job['id']}.json")
            if job["status"] == PENDING:  # keep the newest jobs only
                old = sorted(d.glob("*.json"), key=lambda p: p.stat().st_mtime)[:-KEEP_JOBS]
                for p in old:
                    p.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not record reload job %s: %s", job["id"], exc)

    def reload_status(self, job_id: str) -> dict | None:
        """The job `job_id` as recorded by whichever process runs it; None when unknown."""
        if not JOB_ID.fullmatch(job_id or ""):
            return None
        try:
            job = json.loads((self._jobs_dir() / f"{job_id}.json").read_text())
        except (OSError, ValueError):
            return None
        pid = int(job.get("pid") or 0)
        if job.get("status") == PENDING and not (pid > 0 and psutil.pid_exists(pid)):
            job.update(
                status=FAILED,
                reason=f"the process that ran the reload (pid {job.get('pid')}) exited "
                "before it finished; previous model still serving",
            )
        return job

    def _publish(self, ms: ModelSet) -> dict | None:
        """Install `ms` and share it, both under the state lock, unless a newer generation is published:
        then nothing is installed and that newer state is returned (`follow_state` loads it)."""
        st = {
            "generation": ms.generation,
            "champion": ms.champion.uri,
            "challenger": ms.challenger.uri if ms.challenger else None,
            "ts": time.time(),
        }
        try:
            newer = publish(self.state_file.parent, self.state_file, st, lambda: self._install(ms))
        except OSError as exc:
            log.warning("could not share the reload with other processes: %s", exc)
            if self.current is not ms:
                self._install(ms)
            return None
        if newer is None:
            self._seen_state = (st["generation"], st["champion"], st["challenger"])
        return newer

    def _install(self, ms: ModelSet) -> None:
        old = self.current
        self.current = ms  # the atomic swap
        self.last_error = None
        if self.freeze_gc:
            freeze_gc()
        if self.metrics:
            try:
                if old is not None:
                    for m in old.models():
                        self.metrics.model_info.labels(m.route, m.run_id, str(m.version)).set(0)
                for m in ms.models():
                    self.metrics.model_info.labels(m.route, m.run_id, str(m.version)).set(1)
            except Exception:
                pass
        log.info(
            "serving champion %s (v%s)%s",
            ms.champion.run_id,
            ms.champion.version,
            f" + challenger {ms.challenger.run_id} (v{ms.challenger.version}) at {ms.canary_fraction:.0%}"
            if ms.challenger
            else "",
        )


def freeze_gc(gen0_threshold: int = 20_000) -> None:
    """Move everything alive now (modules, the model) out of the cyclic GC's reach.

    A server process holds a large heap of long-lived objects (mlflow, xgboost, onnxruntime);
    without this every full collection walks all of it while a request waits.
    """
    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(max(gen0_threshold, gc.get_threshold()[0]), g1, g2)


def shared_state_file(s: Settings) -> Path:
    """The servers' shared reload target: SERVING_STATE_FILE (a model line's own, churnops.model_line),
    else `<SERVING_STATE_DIR or state_dir>/serving-model.json` (compose: a volume every server mounts)."""
    if s.serving_state_file:
        return Path(s.serving_state_file)
    return s.state_path(s.serving_state_dir, ".") / "serving-model.json"


def clear_shared_state(settings: Settings | None = None) -> None:
    """Forget reloads of a previous server run (called once by the gunicorn master at start)."""
    s = resolved(settings or get_settings())
    try:
        shared_state_file(s).unlink()
    except FileNotFoundError:
        pass
