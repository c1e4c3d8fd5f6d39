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

Workers are forked: the parent has opened the store, which the workers never touch. Results
come back in file order; the workers decode at most N files ahead of the one the parent
stores, so with N jobs at most N + 1 files' records are in memory at once (a file's records
are its events, per-session facts and anomalies: a small fraction of its packets).
"""
from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

from sensor.anomaly import Stats
from sensor.capture.pcapfile import open_capture
from sensor.pipeline import Pipeline, PipelineSettings


def decode_file(path: str) -> tuple[str, list, Stats, list[str]]:
    """One capture through a fresh pipeline, closed at its end: (name, records, counters, the
    reader's warning lines about damage). A regular file only: a pipe is read once, by the
    process that checked it (the CLI refuses one with --jobs)."""
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
    return pipeline.capture_file, records, stats, list(reader.problems.values())


def decoded_in_parallel(paths: Iterable[str], jobs: int) -> Iterator[tuple[str, list, Stats, list[str]]]:
    """``decode_file`` of each path on ``jobs`` worker processes, yielded in the paths' order.
    A worker's exception (a file that became unreadable: CaptureError) is raised here."""
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        ahead: deque = deque()
        for path in paths:
            ahead.append(pool.apply_async(decode_file, (path,)))
            if len(ahead) > jobs:
                yield ahead.popleft().get()
        while ahead:
            yield ahead.popleft().get()
