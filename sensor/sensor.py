"""The sensor: pipeline -> store -> detector -> sinks, for any source of frames.

Replay and live capture both drive a ``Sensor``: ``start_file`` names the capture,
``process`` takes (ts, linktype, data, frame) tuples or None (an idle tick: live capture
has no packet but time moved on), ``finish`` drains and returns the run's ``Summary``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

from sensor.alerts import AlertEnvelope, rarity_envelope
from sensor.anomaly import Stats
from sensor.capture.pcapfile import CaptureError
from sensor.coercion.correlate import Correlator, CorrelatorSettings
from sensor.coercion.events import PROBABLE, CoercionAlert
from sensor.coercion.fingerprint import EncryptedNetdfsMatcher
from sensor.coercion.pair_days import PairDays
from sensor.config import Config
from sensor.detect.rarity import MS_PER_DAY, RarityDetector
from sensor.events import RpcCallEvent
from sensor.outputs import Outputs
from sensor.pipeline import Pipeline, PipelineSettings
from sensor.evidence import Evidence
from sensor.store import POSTGRES_SCHEMES, open_store
from sensor.store.spooled import Batch
from sensor.store.sqlite import StoreError, event_row, window_end
from sensor.suppress import AllowList

# Events per store transaction: readers see progress and a crash redoes little, while a
# busy replay still pays one commit per thousand events, not per event. Events wait in
# memory until their batch is written, so the write lock is held only while writing.
COMMIT_EVERY_EVENTS = 1000
# The day count the correlator is given for a (victim, listener) pair while PostgreSQL is
# unreachable: "not known yet". Below every rare_days, so the PROBABLE alert is made; its
# batch records and counts the pair's day when it is delivered, and drops the alert then if
# the pair has become common (as the correlator would have).
PAIR_DAYS_LATER = 0
# Longest an event waits unwritten (wall clock) while more traffic keeps arriving, so
# `dfs-sensor alerts` run during a live capture is at most this far behind.
COMMIT_INTERVAL_SECONDS = 1.0

Frame = tuple[float, int, bytes, int]


@dataclass(frozen=True)
class Summary:
    """What a run saw and did: the summary line's numbers."""
    files: int
    packets: int | None  # None: the engine cannot count frames (tshark hands over only what its filter kept)
    bytes: int | None    # None: unknown (tshark live)
    flows: int
    events: int          # events decoded, replayed ones included
    new_events: int      # events the store did not have yet
    alerts: int          # new alerts of every rule
    seconds: float
    anomalies: dict[str, int] = field(default_factory=dict)
    alerts_by_rule: dict[str, int] = field(default_factory=dict)
    decoded_frames: int | None = None   # tshark engine: frames its display filter passed
    suppressed: int = 0                 # new alerts the allow-list held back (stored, not written)
    store_lock_waits: int = 0           # batches that found another writer holding the store
    store_lock_wait_seconds: float = 0.0
    store_reconnects: int = 0           # PostgreSQL: attempts to open a new connection after a lost one
    store_spooled: int = 0              # PostgreSQL: batches still in the spool at the end
    store_spool_dropped: int = 0        # PostgreSQL: events and coercion alerts dropped from the full spool
    store_spool_delivered: int = 0      # PostgreSQL: spooled batches written once the database was back
    store_spool_path: str = ""
    store_pair_days_later: int = 0      # PostgreSQL unreachable: coercion pairs judged at delivery

    @property
    def mb_per_s(self) -> float | None:
        if self.bytes is None:
            return None
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def as_tshark(self, file_bytes: int | None) -> "Summary":
        """What the tshark engine can honestly state: the frames it decoded, not those it read."""
        return replace(self, packets=None, decoded_frames=self.packets, bytes=file_bytes)

    def to_dict(self) -> dict:
        mb_per_s = self.mb_per_s
        return {"files": self.files, "packets": self.packets, "bytes": self.bytes,
                "decoded_frames": self.decoded_frames,
                "flows": self.flows, "events": self.events, "new_events": self.new_events,
                "alerts": self.alerts, "alerts_by_rule": dict(self.alerts_by_rule), "suppressed": self.suppressed,
                "seconds": round(self.seconds, 3),
                "mb_per_s": None if mb_per_s is None else round(mb_per_s, 2), "anomalies": dict(self.anomalies),
                "store_lock_waits": self.store_lock_waits,
                "store_lock_wait_seconds": round(self.store_lock_wait_seconds, 3),
                "store_reconnects": self.store_reconnects, "store_spooled": self.store_spooled,
                "store_spool_dropped": self.store_spool_dropped,
                "store_spool_delivered": self.store_spool_delivered,
                "store_pair_days_later": self.store_pair_days_later}

    def human(self) -> str:
        if self.packets is not None:
            packets = f"{self.packets:,} packets"
        else:
            packets = f"packets n/a ({self.decoded_frames or 0:,} decoded by tshark)"
        size = "" if self.bytes is None else f"{self.bytes / 1e6:,.1f} MB, "
        rate = "" if self.mb_per_s is None else f" ({self.mb_per_s:,.1f} MB/s)"
        lines = [f"{self.files} file(s), {packets}, {size}"
                 f"{self.flows:,} flows, {self.events:,} events ({self.new_events:,} new), "
                 f"{self.alerts:,} alert(s) in {self.seconds:.2f} s{rate}"]
        if self.alerts_by_rule:
            lines.append("alerts: " + ", ".join(f"{rule} {count:,}"
                                                for rule, count in sorted(self.alerts_by_rule.items())))
        if self.suppressed:
            lines.append(f"suppressed by the allow-list: {self.suppressed:,} (stored; dfs-sensor alerts --suppressed)")
        if self.events and not self.new_events:
            lines.append("every event was already stored, so no alert was raised again "
                         "(see `dfs-sensor alerts`, or use another --db)")
        if self.store_lock_waits:
            lines.append(f"store: another writer held the lock {self.store_lock_waits:,} time(s), "
                         f"{self.store_lock_wait_seconds:.2f} s waited")
        if self.store_reconnects:
            lines.append(f"store: {self.store_reconnects:,} attempt(s) to reconnect to the database")
        if self.store_spool_delivered:
            lines.append(f"store: {self.store_spool_delivered:,} batch(es) waited in the spool while the "
                         "database was unreachable and were delivered in order")
        if self.store_spool_dropped:
            lines.append(f"store: the spool was full: {self.store_spool_dropped:,} event(s) and coercion "
                         "alert(s) dropped, oldest first (never stored)")
        if self.store_spooled:
            lines.append(f"store: {self.store_spooled:,} batch(es) wait in the spool {self.store_spool_path} "
                         "(the database is unreachable); the next run against this database delivers "
                         "them first, and raises their alerts then")
        if self.store_pair_days_later:
            lines.append(f"store: {self.store_pair_days_later:,} probable-coercion pair(s) seen while the database "
                         "was unreachable, judged by their day counts when their batch is delivered")
        if self.anomalies:
            lines.append("anomalies: " + ", ".join(
                f"{name} {count:,}" for name, count in sorted(self.anomalies.items(), key=lambda i: -i[1])))
        return "\n".join(lines)


class Sensor:
    def __init__(self, config: Config, outputs: Outputs, pipeline: PipelineSettings | None = None,
                 notify: Callable[[str], None] | None = None):
        """``notify`` hears the PostgreSQL store's outages (one line each way) and spool drops."""
        self.config = config
        self.outputs = outputs
        # PostgreSQL: batches wait in a local spool while the database is unreachable, at
        # start too (the first delivery checks the schema; sensor/store/spooled.py). A SQLite
        # store is a local file: nothing to wait for.
        self.store = open_store(config.db, later=True, deadline=config.store_deadline)
        unreachable = getattr(self.store, "unreachable", None)
        self.spool = None
        if config.db.startswith(POSTGRES_SCHEMES):
            from sensor.store.spooled import StoreSpool

            try:
                self.spool = StoreSpool(config.store_spool, self.store.path, notify)
            except BaseException:
                self.store.close()
                raise
            if unreachable is not None:
                self.spool.failed(type(unreachable)(f"{unreachable} at start (the schema is checked when it "
                                                    "answers)"))
        self.pipeline = Pipeline(pipeline or PipelineSettings())
        self.detector = RarityDetector(config.detector, self.store)
        # What survives SMB3 encryption (issue 6): coerced back-authentication, message sizes.
        self.coercion_stages: tuple = ()
        self.pair_days = PairDays(self.store, config.detector.lookback_days)
        self.correlator_settings = CorrelatorSettings(window=config.coercion.window,
                                                      known_servers=config.coercion.known_servers)
        if config.coercion.enabled:
            self.coercion_stages = (
                Correlator(self.correlator_settings, pair_days=self._while_reachable(self.pair_days)),
                EncryptedNetdfsMatcher())
        self.evidence = None
        self._capture_paths: list[str] = []            # replay: the files read so far
        self._evidence_due: list[AlertEnvelope] = []   # replay: alerts whose pcaps wait for their file
        if config.evidence:
            try:
                self.evidence = Evidence(config.evidence, config.evidence_max_bytes)
            except OSError as e:
                raise StoreError(f"{config.evidence}: cannot use the evidence directory: {e.strerror or e}") from None
        self.allowlist = AllowList(config.allowlist)
        self.stats = Stats()
        # Counters of stages outside the pipeline (a reader's anomalies, the tshark engine),
        # added by the caller and summed into the summary.
        self.source_stats = Stats()
        self._started = time.monotonic()
        # The batch being built: events and coercion alerts not yet written to the store.
        self._pending: list[RpcCallEvent] = []
        self._pending_coercion: list[CoercionAlert] = []
        self._oldest_pending = 0.0
        # Unreachable at start: the newest event of this run (retention then prunes no more than
        # it would have with the store's newest).
        newest = None if unreachable is not None else self.store.newest_event_ms()
        self._newest_ms = window_end(newest or 0, config.max_clock_skew)
        self._pruned_day = self._newest_ms // MS_PER_DAY

    def start_file(self, name: str, path: str | None = None) -> None:
        """``path``: a capture file (replay), which --evidence reads again for the alerts'
        frames once it is done; without one (live) evidence comes from the rings."""
        self._evidence_from_files()
        if path is not None:
            self._capture_paths.append(path)
        self.pipeline.capture_file = name
        self.stats["files"] += 1

    def process(self, source: Iterable[Frame | None]) -> None:
        """Frames through the native pipeline; None is an idle tick (expire, commit). A capture
        reader feeds the pipeline itself (``replay_into``: the batch entry of a classic pcap)
        and gives back its records as it goes."""
        feed = self.pipeline.feed
        evidence = self.evidence if not self._capture_paths else None     # replay reads the files
        replay_into = getattr(source, "replay_into", None)
        if replay_into is not None and evidence is None:
            for records in replay_into(self.pipeline):
                if records:
                    self._handle(records)
                if self._oldest_pending:
                    self._commit_when_due()
            self._commit()
            return
        for item in source:
            if evidence is not None and item is not None:
                evidence.observe(*item)
            if item is None:
                if evidence is not None:
                    evidence.tick()
                self._handle(self.pipeline.tick(time.time()))
                self._commit()
                continue
            records = feed(*item)
            if records:
                self._handle(records)
            if self._oldest_pending:    # most frames make no event: skip the clock read
                self._commit_when_due()
        self._commit()

    def process_records(self, records: Iterable) -> None:
        """Records another engine (tshark) already built: straight to store and detector."""
        for record in records:
            self._handle((record,))
            self._commit_when_due()
        self._commit()

    def correlate(self, records: Iterable) -> None:
        """Records for the coercion stages only: the ``live --workers`` parent's correlator
        (the workers already stored and judged the events). Commits at once: the workers
        share the store's write lock with it, and coercion alerts are rare."""
        for record in records:
            self._correlate(record)
        self._commit()

    def finish(self) -> Summary:
        """End of input: drain the pipeline, commit, prune, release the store."""
        self._handle(self.pipeline.close())
        for stage in self.coercion_stages:
            self._coercion_alerts(stage.close())
        self._commit()
        if self.spool is not None:
            self.spool.flush(self._store_batch)
        self._evidence_from_files()
        if self.evidence is not None and not self._capture_paths:
            self.evidence.close()       # live: the open windows' pcaps
        self._prune()
        if self.spool is not None:
            self.spool.close()
        self.store.close()
        totals = self.pipeline.stats + self.detector.stats + self.source_stats + self.stats
        if self.evidence is not None:
            totals += self.evidence.stats
        for stage in self.coercion_stages:
            totals += stage.stats
        return Summary(
            files=self.stats["files"], packets=totals["packets"], bytes=totals["bytes"],
            flows=totals["flows"], events=self.stats["events"], new_events=self.stats["new_events"],
            alerts=self.stats["alerts"], seconds=time.monotonic() - self._started,
            anomalies={name.removeprefix("anomaly."): n for name, n in totals.items()
                       if name.startswith("anomaly.") and n},
            alerts_by_rule={name.removeprefix("alerts."): n for name, n in self.stats.items()
                            if name.startswith("alerts.") and n},
            suppressed=self.stats["suppressed"],
            store_lock_waits=self.store.stats["lock_waits"],
            store_lock_wait_seconds=self.store.stats["lock_wait_ms"] / 1000,
            store_reconnects=self.store.stats["reconnects"],
            store_spooled=self.spool.waiting if self.spool else 0,
            store_spool_dropped=self.spool.dropped if self.spool else 0,
            store_spool_delivered=self.spool.delivered if self.spool else 0,
            store_spool_path=self.spool.path if self.spool else "",
            store_pair_days_later=self.stats["store_pair_days_later"])

    def _handle(self, records: Iterable) -> None:
        for record in records:
            self._correlate(record)
            if not isinstance(record, RpcCallEvent):
                continue
            self.stats["events"] += 1
            self._pend()
            self._pending.append(replace(record, sensor=self.config.sensor_name))

    def _correlate(self, record) -> None:
        for stage in self.coercion_stages:
            alerts = stage.feed(record)
            if alerts:
                self._coercion_alerts(alerts)

    def _coercion_alerts(self, alerts: list[CoercionAlert]) -> None:
        if alerts:
            self._pend()
            self._pending_coercion += alerts

    def _pend(self) -> None:
        if not self._oldest_pending:
            self._oldest_pending = time.monotonic()

    def _write_batch(self) -> None:
        """The pending events and coercion alerts: stored now, or (PostgreSQL unreachable)
        spooled and stored when the database is back, in order."""
        batch = Batch(self._pending, self._pending_coercion,
                      int((time.time() + self.config.max_clock_skew) * 1000))
        self._pending, self._pending_coercion = [], []
        self._oldest_pending = 0.0
        if self.spool is None:
            self._store_batch(batch)
        else:
            self.spool.write(batch, self._store_batch)

    def _store_batch(self, batch: Batch) -> None:
        """A batch's events and coercion alerts in one short transaction: store each
        event, judge the new ones (the detector reads and writes key_days and alerts in the
        same transaction, so "count the key's days, raise at most one alert per rule, key
        and day" is atomic against other writers), store every alert's envelope once per
        alert_id (rule + key + day). Only new events reach the event log (a replayed capture
        writes nothing twice). Event and alert lines are written before the commit: a crash
        may repeat one on the rerun, never lose one (consumers dedupe on event_id/alert_id)."""
        store = self.store
        ahead_ms = batch.ahead_ms
        rows = [event_row(event) for event in batch.events]
        sensor_name = self.config.sensor_name

        def write() -> tuple[int, int, int, list[tuple[str, bool]], int]:
            """The batch's statements and lines; run again whole if the database
            connection is lost before the commit (PostgreSQL restarting)."""
            new_events = ahead = common = 0
            newest = self._newest_ms
            raised: list[tuple[str, bool]] = []      # (rule id, suppressed by the allow-list)
            for event, added in zip(batch.events, store.add_events(batch.events, rows)):
                if not added:
                    continue
                new_events += 1
                ahead += event.event_timestamp > ahead_ms
                newest = max(newest, event.event_timestamp)
                if self.outputs.events is not None:
                    self.outputs.events.write(event.to_json())
                for alert in self.detector.feed(event):
                    self._raise(rarity_envelope(alert, event, sensor_name), raised)
            for alert in batch.coercion:
                if alert.rule == PROBABLE and alert.day_count == PAIR_DAYS_LATER:
                    alert = self._pair_judged(alert)
                    if alert is None:
                        common += 1
                        continue
                self._raise(alert.envelope(sensor_name), raised)
            return new_events, ahead, newest, raised, common

        new_events, ahead, newest, raised, common = store.run_batch(write)
        self.stats["new_events"] += new_events
        self.stats["coercion_probable_common_pair"] += common     # judged late (PAIR_DAYS_LATER)
        self.stats["anomaly.event_time_ahead_of_clock"] += ahead
        for rule, suppressed in raised:
            counter = "suppressed" if suppressed else "alerts"
            self.stats[counter] += 1
            self.stats[f"{counter}.{rule}"] += 1
        self._newest_ms = window_end(newest, self.config.max_clock_skew)

    def _pair_judged(self, alert: CoercionAlert) -> CoercionAlert | None:
        """A PROBABLE alert made while the database was unreachable, in its batch's
        transaction: the pair's day recorded and counted now; None when the pair is common."""
        day_count = self.pair_days(alert.victim_ip, alert.listener_ip, alert.ts)
        return None if day_count >= self.correlator_settings.rare_days else replace(alert, day_count=day_count)

    def _raise(self, alert: AlertEnvelope, raised: list[tuple[str, bool]]) -> None:
        """Store the envelope (inside the batch's transaction); write it out the first time
        its alert_id is seen, unless the allow-list holds it back."""
        line = alert.to_json()
        allowed = self.allowlist.match(alert.to_dict()) if self.allowlist.entries else None
        if not self.store.add_alert_record(alert.alert_id, alert.rule.id, alert.day,
                                           int(round(alert.ts * 1000)), line,
                                           allowed.reason if allowed else None):
            return
        raised.append((alert.rule.id, allowed is not None))
        if allowed is not None:
            return
        if self.outputs.alerts is not None:
            self.outputs.alerts.write(line)
        if self.evidence is not None:
            if self._capture_paths:
                self._evidence_due.append(alert)
            else:
                self.evidence.write(alert)

    def _evidence_from_files(self) -> None:
        if self._evidence_due:
            try:
                self.evidence.from_files(self._evidence_due, self._capture_paths)
            except (OSError, CaptureError):
                self.stats["anomaly.evidence_write_failed"] += 1
            self._evidence_due = []

    def _commit_when_due(self) -> None:
        if self._oldest_pending and (len(self._pending) >= COMMIT_EVERY_EVENTS or
                                     time.monotonic() - self._oldest_pending >= COMMIT_INTERVAL_SECONDS):
            self._commit()

    def _commit(self) -> None:
        if self._oldest_pending:
            self._write_batch()         # while batches wait in the spool: behind them, into it
        if self.spool is not None and self.spool.waiting:
            self.spool.deliver(self._store_batch)
        if self._newest_ms // MS_PER_DAY != self._pruned_day:
            self._prune()

    def _prune(self) -> None:
        """Forget what fell out of the window (it ends at ``window_end``: capture time,
        bounded by this machine's clock)."""
        if self._newest_ms:
            before_ms = self._newest_ms - self.config.detector.lookback_days * MS_PER_DAY
            if self.spool is None:
                self.store.prune(before_ms)
            elif self.spool.waiting or self.spool.attempt(lambda: self.store.prune(before_ms), None) is None:
                return               # the database is unreachable: prune once it is back
            self._pruned_day = self._newest_ms // MS_PER_DAY

    def _while_reachable(self, pair_days: PairDays) -> Callable[[str, str, float], int]:
        """The correlator's pair days from the store, each lookup a write in a transaction of
        its own (SQLite: another writer's lock waited out with the batches' backoff; PostgreSQL:
        a batch's reconnect and deadline); while PostgreSQL is unreachable, PAIR_DAYS_LATER
        (counted): the alert's batch judges the pair when it is delivered."""
        def in_transaction(victim: str, listener: str, ts: float) -> int:
            return self.store.run_batch(lambda: pair_days(victim, listener, ts))
        if self.spool is None:
            return in_transaction

        def days(victim: str, listener: str, ts: float) -> int:
            count = self.spool.attempt(lambda: in_transaction(victim, listener, ts), None)
            if count is None:
                self.stats["store_pair_days_later"] += 1
                return PAIR_DAYS_LATER
            return count
        return days
