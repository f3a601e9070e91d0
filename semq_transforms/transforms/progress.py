"""Progress of a local run on the launcher's terminal: shards done of planned, rows/s, time left.

    with show_progress(sys.stderr, shards=4, rows=20_000):    # the launcher
        pipeline.run().wait_until_finish()
    # stderr: "shards 4/4, 20,000 of 20,000 rows, 3,912 rows/s, done in 5.11 s"

    record_shard(shard_no, rows)      # the encode step, after each shard is written

How it travels: :func:`show_progress` creates an empty file and names it in the
environment (:data:`PROGRESS_ENV`); each written shard appends one line ``<shard_no>
<rows>`` to it (:func:`record_shard`, one ``O_APPEND`` write of a few bytes: lines from
concurrent writers never interleave); the launcher reads the file twice a second and
redraws one line. This works on the local runners: ``in_memory`` and ``multi_threading``
run the DoFns in the launcher's process, and ``multi_processing`` starts SDK worker
processes that inherit its environment. It does not on a remote runner (its workers have
no such variable, so nothing is written; the launcher shows progress only on the local
runners).

Why not Beam metrics: ``FnApiRunner.run()`` returns only when the pipeline has finished,
so a launcher has no result whose ``metrics()`` it could poll while the run goes on. And
why not a file in the run folder: it would be written into the index (on object storage,
one more object per shard), and a leftover of an earlier attempt would count.

Progress never changes what the job writes: the file is outside the index, a shard replayed
by the runner is counted once (lines are keyed by shard number), and any error writing or
reading it is ignored.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

from semq_transforms.report.units import human_count, human_seconds

__all__ = ["LOCAL_RUNNERS", "PROGRESS_ENV", "progress_line", "read_progress", "record_shard",
           "runs_locally", "show_progress"]

#: The environment variable naming the progress file (set only while the launcher shows
#: progress).
PROGRESS_ENV = "SEMQ_PROGRESS_FILE"
#: Runners whose workers are this process or its children (they see the progress file).
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "SwitchingDirectRunner",
                 "BundleBasedDirectRunner")


def runs_locally(options: Any) -> bool:
    """Whether Beam ``options`` (PipelineOptions) name one of the :data:`LOCAL_RUNNERS`
    (no runner at all is Beam's DirectRunner)."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    return (name or "DirectRunner").rsplit(".", 1)[-1] in LOCAL_RUNNERS


def record_shard(shard_no: int, rows: int) -> None:
    """Note that shard ``shard_no`` (``rows`` rows) is written, if a launcher asked for
    progress (:data:`PROGRESS_ENV` names an existing file); never raises."""
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    try:
        # no O_CREAT: a missing file means nobody watches any more
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError:
        return
    try:
        os.write(fd, f"{int(shard_no)} {int(rows)}\n".encode("ascii"))
    except OSError:
        pass
    finally:
        os.close(fd)


def read_progress(path: str) -> dict[int, int]:
    """Rows of each shard recorded in the progress file ``path`` (``{}`` if unreadable);
    a line not yet complete is skipped, a repeated shard counted once."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return {}
    done: dict[int, int] = {}
    for line in text.split("\n")[:-1]:          # the last piece has no newline yet
        fields = line.split()
        if len(fields) == 2 and all(f.isdigit() for f in fields):
            done[int(fields[0])] = int(fields[1])
    return done


def progress_line(*, shards_done: int, shards: int, rows_done: int, rows: int,
                  elapsed: float, finished: bool = False) -> str:
    """``"shards 2/4, 10,000 of 20,000 rows, 3,846 rows/s, about 3 s left"`` (the time
    left from the rows still to go at the rate so far; ``"done in ..."`` once
    ``finished``)."""
    line = f"shards {shards_done}/{shards}, {human_count(rows_done)} of {human_count(rows)} rows"
    rate = rows_done / elapsed if elapsed > 0 else 0.0
    if rate > 0:
        line += f", {human_count(rate)} rows/s"
    if finished:
        return f"{line}, done in {human_seconds(elapsed)}"
    if rate > 0 and rows > rows_done:
        left = (rows - rows_done) / rate
        when = f"{max(1, round(left))} s" if left < 60 else human_seconds(left)
        return f"{line}, about {when} left"
    return line


@contextlib.contextmanager
def show_progress(stream: TextIO, *, shards: int, rows: int,
                  interval: float = 0.5) -> Iterator[None]:
    """Show the run's progress on ``stream`` (a terminal: the line is redrawn in place)
    while the block runs, and the final line after it (``done in ...`` unless the block
    raised); ``shards`` and ``rows`` are the planned totals. Sets :data:`PROGRESS_ENV` for
    the block (restored afterwards)."""
    fd, path = tempfile.mkstemp(prefix="semq-progress-", suffix=".txt")
    os.close(fd)
    previous = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = path
    start = time.monotonic()
    stop = threading.Event()

    def draw(last: bool = False, finished: bool = False) -> None:
        done = read_progress(path)
        line = progress_line(shards_done=len(done), shards=shards,
                             rows_done=sum(done.values()), rows=rows,
                             elapsed=time.monotonic() - start, finished=finished)
        try:
            stream.write(f"\r{line}\x1b[K" + ("\n" if last else ""))
            stream.flush()
        except (OSError, ValueError):
            pass

    def loop() -> None:
        while not stop.wait(interval):
            draw()

    thread = threading.Thread(target=loop, name="semq-progress", daemon=True)
    thread.start()
    finished = False
    try:
        yield
        finished = True
    finally:
        stop.set()
        thread.join()
        draw(last=True, finished=finished)
        if previous is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = previous
        with contextlib.suppress(OSError):
            os.remove(path)
