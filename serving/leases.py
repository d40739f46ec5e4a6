"""Shard leases of the stream consumers: the design of Kinesis' own client library (KCL), on the store.

Every shard of the input stream has one lease (churnops.store.base.Lease) in the same store as
the prediction log: owner, counter, expiry, checkpoint, parent shards. A consumer:

- renews the leases it holds every third of CONSUMER_LEASE_S (conditional on the counter it
  holds); it starts a batch of a shard only while its last renewal is younger than 0.6 lease
  durations, so a batch in flight has 0.4 lease durations to checkpoint before anyone may take the
  lease over (clocks must agree to well under that). Past it the new owner processes the batch
  again (at least once: the prediction log keeps one entry per record);
- takes leases that expired (their owner died or was cut off) or have no owner, up to its fair
  share: ceil(leases ready / consumers alive);
- below its fair share with nothing free, asks the most-loaded owner for one lease (when that owner
  holds more than the fair share, or as many and this consumer is two or more below it): the
  request (`pending_owner`) changes the counter, the owner sees it at its next renewal, stops
  polling the shard, lets the batch in flight finish and checkpoint, and hands the lease over.
  A dead owner never answers: its lease expires and is taken like any other;
- checkpoints conditionally: only the owner at its counter may move a checkpoint, and never
  backwards (sequence numbers compared as integers); a refused checkpoint means the lease was lost
  and the shard is dropped before anything else of it is processed;
- after a reshard, takes a child shard only once every parent's checkpoint is SHARD_END (the
  parent was read to its end), so records of one partition key keep their order.

Lease keys are `kinesis:<stream>:<stream created, ms>:<shard id>`, so a stream deleted and created
again under the same name starts with fresh leases. A lease created for a shard that has a
checkpoint in the older per-shard table (`kinesis:<stream>:<shard id>`) starts from it.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from churnops.store.base import SHARD_END, Lease, seq_order
from churnops.store.protocols import CheckpointStore
from serving.checkpoint import Checkpoint

log = logging.getLogger(__name__)

VALID_FRACTION = 0.6  # a lease is used for this fraction of its duration after the renewal began


class _Named(logging.LoggerAdapter):
    """Log lines that name the consumer (several may log to one place)."""

    def process(self, msg, kwargs):
        return f"[{self.extra['worker']}] {msg}", kwargs


@dataclass
class Held:
    """A lease this consumer holds: the counter it holds it at, and until when it may process the shard."""

    counter: int
    valid_until: float  # time.monotonic()
    handoff_to: str | None = None  # another consumer asked for it: finish the batch in flight, hand over


class LeaseCoordinator:
    """The leases of one consumer (`worker`) on one stream incarnation (`prefix`)."""

    def __init__(
        self,
        store: CheckpointStore,
        prefix: str,
        worker: str,
        duration_s: float,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.prefix = prefix
        self.worker = worker
        self.duration_s = float(duration_s)
        self.clock = clock
        self.held: dict[str, Held] = {}  # shard id -> lease held
        self._lock = threading.RLock()  # held, and every conditional write of this consumer
        self._busy: dict[str, threading.Lock] = {}  # per shard: held while a batch of it is processed
        self._last_tick = -math.inf
        self.taken = 0  # leases taken over after they expired (or were free)
        self.adopted = 0  # leases found handed over to this consumer
        self.lost = 0  # leases this consumer lost without handing them over
        self.log = _Named(log, {"worker": worker})

    # ---- keys ------------------------------------------------------------------------------------------
    def key(self, shard_id: str) -> str:
        return self.prefix + shard_id

    def shard(self, key: str) -> str:
        return key[len(self.prefix) :]

    # ---- shards -> leases ------------------------------------------------------------------------------
    def sync_shards(self, shards: list[dict], legacy: Callable[[str], str | None] | None = None) -> None:
        """Create the lease of every listed shard that has none (its parents from ParentShardId and
        AdjacentParentShardId; its checkpoint from `legacy(shard_id)` when that gives one)."""
        have = {lease.key for lease in self.store.list_leases(self.prefix)}
        for sh in shards:
            key = self.key(sh["ShardId"])
            if key in have:
                continue
            parents = [self.key(p) for p in (sh.get("ParentShardId"), sh.get("AdjacentParentShardId")) if p]
            old = legacy(sh["ShardId"]) if legacy else None
            seq = None
            if old is not None:
                try:
                    seq = seq_order(Checkpoint.decode(old).seq)
                except ValueError:
                    old = None
            if self.store.create_lease(Lease(key, checkpoint=old, seq=seq or "", parents=parents)):
                self.log.info("lease %s created%s", key, f" (parents {parents})" if parents else "")

    # ---- what the poll loop asks -------------------------------------------------------------------------
    def held_now(self) -> dict[str, Held]:
        """A copy of the leases held now (shard id -> Held; a lease taken again is a new Held)."""
        with self._lock:
            return dict(self.held)

    def may_process(self, shard_id: str) -> bool:
        """Whether this consumer holds the shard's lease, renewed recently enough, with no hand-off asked."""
        with self._lock:
            h = self.held.get(shard_id)
            return h is not None and h.handoff_to is None and time.monotonic() < h.valid_until

    @contextmanager
    def processing(self, shard_id: str) -> Iterator[bool]:
        """Hold the shard for one batch (no hand-off meanwhile); yields whether it may be processed."""
        with self._lock:
            busy = self._busy.setdefault(shard_id, threading.Lock())
        with busy:
            yield self.may_process(shard_id)

    def _refresh(self, shard_id: str, h: Held) -> bool:
        """Read the lease again after a refused write: still this consumer's (a hand-off may have been
        asked for, which changes the counter: adopt it)? False when it went to another consumer."""
        lease = self.store.get_lease(self.key(shard_id))
        if lease is None or lease.owner != self.worker:
            return False
        if lease.counter != h.counter:
            h.counter, h.handoff_to = lease.counter, lease.pending_owner
            if h.handoff_to:
                self.log.info("shard %s: %s asks for the lease; handing it over", shard_id, h.handoff_to)
        return True

    def checkpoint(self, shard_id: str, checkpoint: str | None, seq: str | None, backwards_ok: bool = False) -> bool:
        """Write the shard's checkpoint if this consumer still holds the lease and it does not go back;
        False (and the lease dropped here) when refused. Raises when the store does."""
        with self._lock:
            h = self.held.get(shard_id)
            if h is None:
                return False
            key, order = self.key(shard_id), seq_order(seq)
            ok = self.store.checkpoint_lease(key, self.worker, h.counter, checkpoint, order, backwards_ok)
            mine = ok or self._refresh(shard_id, h)
            if not ok and mine:
                ok = self.store.checkpoint_lease(key, self.worker, h.counter, checkpoint, order, backwards_ok)
            if not ok:
                why = "it would go backwards" if mine else "the lease was lost"
                self.log.warning("shard %s: checkpoint %s refused (%s); dropping the shard", shard_id, seq, why)
                self._drop(shard_id)
            return ok

    def finish(self, shard_id: str) -> bool:
        """The shard was read to its end: checkpoint SHARD_END and release the lease (its children may start)."""
        with self._lock:
            h = self.held.get(shard_id)
            if h is None or not self.checkpoint(shard_id, SHARD_END, SHARD_END):
                return False
            self.store.cas_lease(self.key(shard_id), h.counter, None, 0.0, None, True)
            self.held.pop(shard_id, None)
            self.log.info("shard %s finished (SHARD_END); lease released", shard_id)
            return True

    def stored_checkpoint(self, shard_id: str) -> str | None:
        lease = self.store.get_lease(self.key(shard_id))
        return None if lease is None else lease.checkpoint

    # ---- the lease loop -------------------------------------------------------------------------------------
    def tick_if_due(self) -> None:
        if time.monotonic() - self._last_tick >= self.duration_s / 3:
            self.tick()

    def tick(self) -> None:
        """Renew, hand over what was asked for, take expired or free leases, ask for one when below share."""
        with self._lock:
            self._last_tick = time.monotonic()
            self.renew()
            self.hand_over()
            self.balance()

    def _drop(self, shard_id: str) -> None:
        if self.held.pop(shard_id, None) is not None:
            self.lost += 1

    def renew(self) -> None:
        """Extend every held lease (conditional on the counter held); learn of hand-off requests and losses."""
        for sh, h in list(self.held.items()):
            started = time.monotonic()
            key = self.key(sh)
            try:
                ok = self.store.cas_lease(
                    key, h.counter, self.worker, self.clock() + self.duration_s, h.handoff_to, False
                )
                if not ok and self._refresh(sh, h):
                    ok = self.store.cas_lease(
                        key, h.counter, self.worker, self.clock() + self.duration_s, h.handoff_to, False
                    )
            except Exception as exc:  # store away: keep processing only while the lease is surely ours
                self.log.warning("lease %s not renewed (%s: %s)", key, type(exc).__name__, exc)
                continue
            if ok:
                h.valid_until = started + VALID_FRACTION * self.duration_s
            else:
                self.log.warning("shard %s: lease lost to another consumer; stopping it", sh)
                self._drop(sh)

    def hand_over(self) -> None:
        """Give the leases another consumer asked for, once no batch of theirs is in flight."""
        for sh, h in list(self.held.items()):
            if h.handoff_to is None:
                continue
            busy = self._busy.setdefault(sh, threading.Lock())
            if not busy.acquire(blocking=False):
                continue  # a batch is being processed: its checkpoint first, next tick
            try:
                self.store.cas_lease(self.key(sh), h.counter, h.handoff_to, self.clock() + self.duration_s, None, True)
                self.held.pop(sh, None)
                self.log.info("shard %s: lease handed over to %s", sh, h.handoff_to)
            except Exception as exc:
                self.log.warning("shard %s: hand-over failed (%s); retrying", sh, exc)
            finally:
                busy.release()

    def balance(self) -> None:
        """Adopt leases handed over to this consumer, take expired ones up to the fair share, else ask for one."""
        leases = self.store.list_leases(self.prefix)
        now = self.clock()
        finished = {lease.key for lease in leases if lease.finished}
        known = {lease.key for lease in leases}
        ready = [
            lease
            for lease in leases
            if not lease.finished and all(p in finished or p not in known for p in lease.parents)
        ]

        def live(lease: Lease) -> bool:
            return lease.owner is not None and lease.expires > now

        for lease in ready:  # handed over to this consumer (or held from before this object)
            sh = self.shard(lease.key)
            if live(lease) and lease.owner == self.worker and sh not in self.held:
                valid = time.monotonic() + VALID_FRACTION * (lease.expires - now)
                self.held[sh] = Held(lease.counter, valid, lease.pending_owner)
                self.adopted += 1
                self.log.info("shard %s: lease handed over to this consumer", sh)
        # a lease asked for counts for the one who asked: no consumer asks twice for one share
        owners = Counter((lease.pending_owner or lease.owner) for lease in ready if live(lease))
        workers = set(owners) | {self.worker}
        target = math.ceil(len(ready) / len(workers)) if ready else 0
        mine = owners[self.worker]
        need = target - mine
        if need <= 0:
            return
        free = [lease for lease in ready if not live(lease)]
        random.shuffle(free)  # consumers starting together do not all race for the same lease
        for lease in free[:need]:
            started = time.monotonic()
            if self.store.cas_lease(lease.key, lease.counter, self.worker, self.clock() + self.duration_s, None, True):
                sh = self.shard(lease.key)
                self.held[sh] = Held(lease.counter + 1, started + VALID_FRACTION * self.duration_s)
                self.taken += 1
                need -= 1
                self.log.info(
                    "shard %s: lease taken (%s)", sh, f"expired, was {lease.owner}" if lease.owner else "no owner"
                )
        if need <= 0 or free:
            return
        others = [(n, o) for o, n in owners.items() if o != self.worker]
        if not others:
            return
        most, victim = max(others)
        if most > target or (most == target and need > 1):
            theirs = [lease for lease in ready if lease.owner == victim and live(lease) and not lease.pending_owner]
            if theirs:
                lease = random.choice(theirs)
                if self.store.cas_lease(lease.key, lease.counter, lease.owner, lease.expires, self.worker, True):
                    self.log.info("shard %s: asked %s to hand the lease over", self.shard(lease.key), victim)

    def release_all(self) -> None:
        """Stopping: give every held lease back (no owner), so others take them at once, not after expiry."""
        with self._lock:
            for sh, h in list(self.held.items()):
                try:
                    self.store.cas_lease(self.key(sh), h.counter, None, 0.0, None, True)
                except Exception as exc:
                    self.log.warning("lease of shard %s not released (%s); it expires", sh, exc)
            self.held.clear()


class LeaseLoop:
    """A daemon thread that calls `tick` every `interval_s` until stopped (a failed tick is logged)."""

    def __init__(self, tick: Callable[[], None], interval_s: float):
        self.tick = tick
        self.interval_s = interval_s
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="leases", daemon=True)

    def start(self) -> "LeaseLoop":
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.tick()
            except Exception as exc:  # store away: the next tick tries again
                log.warning("lease tick failed (%s: %s)", type(exc).__name__, exc)
            self.stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(5)
