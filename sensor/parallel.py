"""``replay --jobs N``: capture files decoded in parallel worker processes, merged in one store.

Each worker runs a fresh Pipeline over one whole file and hands back its records (events, SMB
sessions, NTLM authentications, encrypted-message sizes, anomalies) with its counters. The
parent takes the files' records in the order the files were given, each file's in the order
its pipeline produced them, through the same store, detector and coercion stages a serial
replay feeds (``Sensor.process_records``, as for the tshark engine): the stored events and
the alerts equal a serial replay's for files whose connections do not continue into the
next file, which is the case for separate captures (a day's capture per file). A set of files
cut from one capture (``tcpdump -C``/``-G`` rotation) should be replayed serially: there, one
pipeline follows a connection from one file into the next, and a worker cannot.

Workers are forked as soon as the captures are checked, before the parent opens its outputs
and the store (which the workers never touch), so they decode while the parent starts up.
Results come back in file order; each worker has a file queued behind the one it decodes,
so no worker waits for the parent to store; at most 2N files' records are in memory at once
(a file's records are its events, per-session facts and anomalies: a small fraction of its
packets). A worker that dies (killed, out of memory) ends the run with ``WorkerDied`` naming
its file, never a hang: the files before it are stored, and a rerun stores nothing twice.
"""
from __future__ import annotations

import dataclasses
import signal
import threading
from collections import deque
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from operator import attrgetter
from pathlib import Path
from queue import SimpleQueue
from typing import Callable, Iterator

from sensor.anomaly import Stats
from sensor.capture.pcapfile import CaptureError, open_capture
from sensor.pipeline import Pipeline, PipelineSettings

# Files handed to the pool per worker: the one it decodes and the next, so a worker that
# finishes goes on at once while the parent stores the files before it.
FILES_PER_WORKER = 2


class WorkerDied(Exception):
    """A worker process ended without a result (killed, out of memory)."""


@dataclass
class DecodedFile:
    """One capture's records as its own pipeline produced them, its counters and the reader's
    warning lines about damage."""
    name: str
    records: list
    stats: Stats
    problems: list[str]

    def __reduce__(self):
        """Pickled (worker -> parent) as each record's field values, not as the record: a
        frozen slotted dataclass pickles its fields as a dict and unpickles them through a
        Python ``__setstate__``, 4x the cost of a tuple and rebuilding the record (the SMB3
        transform headers of an encrypted session are one record each)."""
        kinds, classes, rows = _as_rows(self.records)
        return _from_rows, (self.name, kinds, classes, rows, self.stats, self.problems)


def _as_rows(records: list) -> tuple[bytes, list[type | None], list]:
    """(each record's class number, the classes, each record's field values); class None: the
    record itself (not a dataclass). Field values keep their objects, so a flow's FlowKey,
    shared by its records, is pickled once."""
    fields: dict[type, tuple[int, Callable | None]] = {}
    kinds = bytearray()
    rows = []
    for record in records:
        kind = type(record)
        number, values = fields.get(kind) or fields.setdefault(kind, (len(fields), _values_of(kind)))
        kinds.append(number)
        rows.append(values(record) if values else record)
    return bytes(kinds), [kind if values else None for kind, (_, values) in fields.items()], rows


def _values_of(kind: type) -> Callable | None:
    """A getter of the record's field values in __init__ order (a tuple even for one field),
    None when the class cannot be rebuilt from them."""
    if not dataclasses.is_dataclass(kind):
        return None
    names = [f.name for f in dataclasses.fields(kind)]
    if not names or any(not f.init or f.kw_only for f in dataclasses.fields(kind)):
        return None
    getter = attrgetter(*names)
    return getter if len(names) > 1 else lambda record: (getter(record),)


def _from_rows(name: str, kinds: bytes, classes: list[type | None], rows: list, stats: Stats,
               problems: list[str]) -> DecodedFile:
    records = [row if classes[kind] is None else classes[kind](*row) for kind, row in zip(kinds, rows)]
    return DecodedFile(name, records, stats, problems)


def decode_file(path: str) -> DecodedFile:
    """One capture through a fresh pipeline, closed at its end. A regular file only: a pipe is
    read once, by the process that checked it (the CLI refuses one with --jobs)."""
    pipeline = Pipeline(PipelineSettings())
    pipeline.capture_file = Path(path).name
    records: list = []
    with open_capture(path) as reader:
        for out in reader.replay_into(pipeline):      # the batch entry, as a serial replay reads
            records += out
        records += pipeline.close()
        stats = pipeline.stats
        # the reader counts packets too; only its anomalies (truncation) are news
        stats.update({k: n for k, n in reader.stats.items() if k.startswith("anomaly.")})
    return DecodedFile(pipeline.capture_file, records, stats, list(reader.problems.values()))


class DecodedInParallel:
    """``decode_file`` of each path on ``jobs`` worker processes, iterated in the paths' order.
    Made, it forks the workers and hands each its first ``FILES_PER_WORKER`` files; use it as a
    context manager, which ends them. A worker's CaptureError (a file that became unreadable)
    is raised by the iteration; a worker that ended without its result, WorkerDied. The
    workers are daemonic: a parent that exits before using it (the store cannot be opened)
    ends them."""

    def __init__(self, paths: list[str], jobs: int) -> None:
        self._paths = list(paths)
        self._workers: list[_Worker] = []
        self._handed = 0        # files handed out so far, in order
        context = get_context("fork")
        for number in range(jobs):
            tasks, to_worker = context.Pipe(duplex=False)
            from_worker, results = context.Pipe(duplex=False)
            process = context.Process(target=_work, args=(tasks, results), daemon=True,
                                      name=f"dfs-sensor-jobs-{number + 1}")
            process.start()
            tasks.close()       # the worker's ends: its death is then EOF here
            results.close()
            self._workers.append(_Worker(process, to_worker, from_worker))
        for _ in range(FILES_PER_WORKER):
            for worker in self._workers:
                self._hand_out(worker)

    def __enter__(self) -> "DecodedInParallel":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        for worker in self._workers:
            if kind is None:
                worker.tasks.send(None)         # done: the worker returns
            else:
                worker.process.terminate()      # its files are no longer wanted
        for worker in self._workers:
            worker.process.join()
            worker.tasks.close()
            worker.results.close()

    def __iter__(self) -> Iterator[DecodedFile]:
        for index, path in enumerate(self._paths):
            worker = next(w for w in self._workers if w.files and w.files[0] == index)
            decoded = worker.result(path)
            worker.files.popleft()
            if isinstance(decoded, Exception):
                raise decoded
            self._hand_out(min(self._workers, key=lambda w: len(w.files)))
            yield decoded

    def _hand_out(self, worker: "_Worker") -> None:
        if self._handed < len(self._paths):
            worker.files.append(self._handed)
            worker.tasks.send(self._paths[self._handed])
            self._handed += 1


class _Worker:
    """A worker process, its task and result pipes, and its files handed out, in order."""

    def __init__(self, process, tasks: Connection, results: Connection) -> None:
        self.process = process
        self.tasks = tasks
        self.results = results
        self.files: deque[int] = deque()       # positions in the paths

    def result(self, path: str) -> DecodedFile | Exception:
        """The result for ``files[0]`` (``path``): the worker returns its files' results in order."""
        try:
            wait([self.results, self.process.sentinel])
            return self.results.recv()          # a result still in the pipe is read whole first
        except (EOFError, OSError):
            pass
        self.process.join()
        code = self.process.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
        raise WorkerDied(f"a --jobs worker process {how} before {path} was decoded (out of memory?); "
                         "the files before it are stored")


def _work(tasks: Connection, results: Connection) -> None:
    """A worker: decodes each path it is sent, until None, and sends back each result in
    order, from a thread of its own so that decoding goes on while the parent is busy."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the parent's, which ends the workers
    outbox: SimpleQueue = SimpleQueue()
    sender = threading.Thread(target=_send_all, args=(outbox, results))
    sender.start()
    try:
        while (path := tasks.recv()) is not None:
            try:
                outbox.put(decode_file(path))
            except CaptureError as e:       # removed or changed since the CLI checked it
                outbox.put(e)
    except EOFError:                        # the parent is gone
        pass
    outbox.put(None)
    sender.join()


def _send_all(outbox: SimpleQueue, results: Connection) -> None:
    try:
        while (item := outbox.get()) is not None:
            results.send(item)
    except OSError:                         # the parent is gone (BrokenPipeError)
        pass
