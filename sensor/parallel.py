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
A worker sends a file's records as it decodes them, a few thousand at a time, each record as
its field values (``RecordRows``), from a thread of its own so that it decodes on while the
parent is busy; the parent takes the files in order and a file's records as they come, so it
stores the file it waits for while that file is still being decoded. Each worker has one
file at a time and gets the next as soon as the parent sees it finished one (the parent
reads every worker's messages whenever it takes one and keeps them for their file's turn):
the files are decoded and finish in about their order. At most N files are handed out at
once (a file's records are its events, per-session facts and anomalies: a small fraction of
its packets). A worker that dies (killed, out of memory) ends the run with ``WorkerDied``
naming the file, never a hang: the files before it are stored, and a rerun stores nothing
twice.
"""
from __future__ import annotations

import dataclasses
import gc
import os
import signal
import threading
import traceback
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

# Records per message from a worker: enough that a message's own cost (a pickle header, a
# system call) is small against its records' (pickling a file in chunks of 512, 1024 or 4096
# costs the same), few enough that the parent has stored nearly all of a file when its
# worker finishes it (4096: 30-40 ms of storing left then, 1024: 5-10 ms).
CHUNK_RECORDS = 1024


class WorkerDied(Exception):
    """A worker process ended before it had sent all of its file (killed, out of memory)."""


@dataclass
class RecordRows:
    """Records on their way from a worker to the parent."""
    records: list

    def __reduce__(self):
        """Pickled as each record's field values, not as the record: a frozen slotted
        dataclass pickles its fields as a dict and unpickles them through a Python
        ``__setstate__``, 4x the cost of a tuple and rebuilding the record (the SMB3 transform
        headers of an encrypted session are one record each)."""
        return _from_rows, _as_rows(self.records)


@dataclass
class FileDone:
    """A capture's last message: its counters and the reader's warning lines about damage."""
    stats: Stats
    problems: list[str]


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


def _from_rows(kinds: bytes, classes: list[type | None], rows: list) -> RecordRows:
    return RecordRows([row if classes[kind] is None else classes[kind](*row) for kind, row in zip(kinds, rows)])


def decoded_chunks(path: str) -> Iterator[RecordRows | FileDone]:
    """One capture through a fresh pipeline, closed at its end: its records in order,
    ``CHUNK_RECORDS`` or so at a time, then FileDone. A regular file only: a pipe is read
    once, by the process that checked it (the CLI refuses one with --jobs)."""
    pipeline = Pipeline(PipelineSettings())
    pipeline.capture_file = Path(path).name
    records: list = []
    with open_capture(path) as reader:
        for out in reader.replay_into(pipeline):      # the batch entry, as a serial replay reads
            records += out
            if len(records) >= CHUNK_RECORDS:
                yield RecordRows(records)
                records = []
        records += pipeline.close()
        stats = pipeline.stats
        # the reader counts packets too; only its anomalies (truncation) are news
        stats.update({k: n for k, n in reader.stats.items() if k.startswith("anomaly.")})
    yield RecordRows(records)
    yield FileDone(stats, list(reader.problems.values()))


class FileInWorker:
    """A capture a worker decodes: its name, its records as they come (``records()``, to be
    read to the end before the next file), then its counters and warnings."""

    def __init__(self, path: str, workers: "DecodedInParallel", worker: "_Worker") -> None:
        self.path = path
        self.name = Path(path).name
        self.stats = Stats()
        self.problems: list[str] = []
        self._workers = workers
        self._worker = worker

    def records(self) -> Iterator:
        while not isinstance(message := self._workers.next_message(self._worker, self.path), FileDone):
            if isinstance(message, Exception):
                raise message
            yield from message.records
        self.stats, self.problems = message.stats, message.problems


class DecodedInParallel:
    """``decoded_chunks`` of each path on ``jobs`` worker processes, iterated in the paths'
    order as FileInWorker. Made, it forks the workers and hands each a file; use it as a
    context manager, which ends them. A worker's CaptureError (a file that became unreadable)
    is raised by ``records()``; a worker that ended before its file's FileDone, WorkerDied.
    The workers are daemonic: a parent that exits before using it (the store cannot be
    opened) ends them.

    Whenever the parent takes a message it also reads whatever the other workers sent
    (keeping it, in order, for their files' turn) and hands the next file to a worker that
    finished one: the files are decoded in their order, each by the first worker free, and
    finish in about that order, so that little is left to store once the workers are done."""

    def __init__(self, paths: list[str], jobs: int) -> None:
        self._paths = list(paths)
        self._workers: list[_Worker] = []
        self._handed = 0        # files handed out so far, in order
        self._owners: list[_Worker] = []     # by position in the paths
        context = get_context("fork")
        # What is built so far (modules, rules, the pipeline's tables) lives as long as the
        # process: out of the collector's full passes, which then neither scan it in each
        # process nor write to its pages in the workers (copy-on-write). 10 runs each over
        # 4 files: 1.62 s CPU against 1.66 s, median.
        gc.freeze()
        for number in range(jobs):
            tasks, to_worker = context.Pipe(duplex=False)
            from_worker, results = context.Pipe(duplex=False)
            process = context.Process(target=_work, args=(tasks, results), daemon=True,
                                      name=f"dfs-sensor-jobs-{number + 1}")
            process.start()
            tasks.close()       # the worker's ends: its death is then EOF here
            results.close()
            self._workers.append(_Worker(process, to_worker, from_worker))
        for worker in self._workers:
            self._hand_out(worker)

    def __enter__(self) -> "DecodedInParallel":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        for worker in self._workers:
            if kind is None:
                worker.send(None)               # done: the worker returns
            else:
                worker.process.terminate()      # its files are no longer wanted
        for worker in self._workers:
            worker.process.join()
            worker.tasks.close()
            worker.results.close()

    def __iter__(self) -> Iterator[FileInWorker]:
        for index, path in enumerate(self._paths):
            yield FileInWorker(path, self, self._owners[index])   # read to its end by the caller

    def next_message(self, worker: "_Worker", path: str) -> RecordRows | FileDone | CaptureError:
        """``worker``'s next message (about ``path``), taking in what every worker has sent."""
        self._take_in(block=False)
        while not worker.inbox:
            if worker.gone:
                worker.process.join()
                code = worker.process.exitcode
                how = f"was killed by signal {-code} (out of memory?)" if code < 0 else f"exited with status {code}"
                raise WorkerDied(f"a --jobs worker process {how} before {path} was decoded; the files before "
                                 "it are stored")
            self._take_in(block=True)
        return worker.inbox.popleft()

    def _take_in(self, block: bool) -> None:
        """Every message the workers have sent so far (waiting for one if ``block``); a file to
        each worker that finished its own."""
        waiting = {w.results: w for w in self._workers if not w.gone}
        for ready in wait(list(waiting), None if block else 0):
            worker = waiting[ready]
            try:
                while worker.results.poll():
                    message = worker.results.recv()
                    worker.inbox.append(message)
                    if isinstance(message, (FileDone, Exception)):       # its file's last message
                        worker.busy = False
                        self._hand_out(worker)
            except (EOFError, OSError):     # it died (its end of the pipe closed): all it sent is read
                worker.gone = True

    def _hand_out(self, worker: "_Worker") -> None:
        if self._handed < len(self._paths) and not worker.busy:
            worker.busy = True
            self._owners.append(worker)
            worker.send(self._paths[self._handed])
            self._handed += 1


class _Worker:
    """A worker process, its task and result pipes, and its messages not yet taken."""

    def __init__(self, process, tasks: Connection, results: Connection) -> None:
        self.process = process
        self.tasks = tasks
        self.results = results
        self.inbox: deque = deque()
        self.busy = False       # it has a file not yet sent back whole
        self.gone = False       # ended: nothing more will come from it

    def send(self, path: str | None) -> None:
        """A file to decode, or None: return."""
        try:
            self.tasks.send(path)
        except OSError:     # the worker died (BrokenPipeError): reading its next file says so
            pass


def _work(tasks: Connection, results: Connection) -> None:
    """A worker: decodes each path it is sent, until None, and sends back its messages in
    order, from a thread of its own so that decoding goes on while the parent is busy."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the parent's, which ends the workers
    outbox: SimpleQueue = SimpleQueue()
    sender = threading.Thread(target=_send_all, args=(outbox, results))
    sender.start()
    try:
        while (path := tasks.recv()) is not None:
            try:
                for message in decoded_chunks(path):
                    outbox.put(message)
            except CaptureError as e:       # removed or changed since the CLI checked it
                outbox.put(e)
    except EOFError:                        # the parent is gone
        pass
    finally:        # any other exception (a bug) too: the sender ends, and the worker with it
        outbox.put(None)
        sender.join()


def _send_all(outbox: SimpleQueue, results: Connection) -> None:
    try:
        while (item := outbox.get()) is not None:
            results.send(item)
    except OSError:                         # the parent is gone (BrokenPipeError)
        pass
    except Exception:       # a message that cannot be pickled (a bug): the worker ends, which the parent reports
        traceback.print_exc()
        os._exit(1)
