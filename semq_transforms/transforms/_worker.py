"""Worker-process hygiene: an SDK worker exits with its job and logs no secret.

Beam's local multi-process runner starts SDK workers as child processes (``python -m
apache_beam.runners.worker.sdk_worker_main``, through ``sh -c``), and so do the SDK
containers of Dataflow, Flink and Spark (their boot program). Beam's own ``worker_pool_main``
starts workers with ``python -c``: those are left alone (the pool, not the job, owns them).

* When the process that started a worker is killed, a worker in the middle of a long step
  (encoding a shard) only notices at its next message to the runner, and may write a shard
  or a report first: files of a run that no longer exists, racing a rerun of the same run.
* A storage library's log line on a worker quotes URLs as given (a signed URL's token), and
  Beam forwards worker logs to the launcher.

The job's DoFns call :func:`worker_setup` in ``setup``: in such a worker a daemon thread polls
the parent process and ends this one when the parent is gone, and every log record of the
process is redacted. Elsewhere (the launcher itself, in-process runners, threads) it does
nothing.

The parent is the process that started the worker: Beam starts it through ``sh -c``, so the
shells in between are looked through (on Linux, from ``/proc``) and the first process that
is not a shell is watched, by pid and start time (a reused pid is another process); a killed
process that is not yet reaped (a zombie) counts as gone. A starter that died before the
first bundle's ``setup`` is not noticed (the shell has been re-parented by then); Beam's
harness ends such a worker at its next message to the runner.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from semq_transforms._urls import redact_log_records

#: The module a Beam SDK worker process runs as ``__main__``.
SDK_WORKER_MAIN = "apache_beam.runners.worker.sdk_worker_main"
#: How often the parent is checked, in seconds.
POLL_SECONDS = 0.1
#: Exit status of a worker that outlived its parent.
EXIT_ORPHANED = 75

_lock = threading.Lock()
_watching = False


def in_sdk_worker_process() -> bool:
    """Whether this process is a Beam SDK worker started as a child process."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == SDK_WORKER_MAIN


def worker_setup() -> None:
    """In an SDK worker process (a no-op anywhere else): start, once, the watch that exits
    the process when the process that started it dies (:func:`watch_starter`), and redact
    every log record of the process (``_urls.redact_log_records``: a storage library's log
    line on a worker quotes URLs as given, and Beam forwards worker logs to the launcher)."""
    if in_sdk_worker_process():
        watch_starter()
        redact_log_records()


def watch_starter() -> None:
    """Start (once per process) a daemon thread that ends this process, without cleanup,
    as soon as the process that started it (shells looked through) is gone."""
    global _watching
    with _lock:
        if _watching:
            return
        _watching = True
    starter = _starter()

    def watch() -> None:
        while _alive(starter):
            time.sleep(POLL_SECONDS)
        os._exit(EXIT_ORPHANED)    # no cleanup: nothing of a dead job may be written now

    threading.Thread(target=watch, name="semq-exit-with-parent", daemon=True).start()


#: Process names of the shells a runner may start a worker through.
_SHELLS = frozenset({"sh", "bash", "dash"})


def _stat(pid: int) -> tuple[str, str, int, int] | None:
    """``(name, state, parent pid, start time)`` of ``pid`` from ``/proc`` (None: no such
    process, or no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    name = text[text.find("(") + 1:text.rfind(")")]
    fields = text[text.rfind(")") + 2:].split()    # fields 3.. of proc(5)
    return name, fields[0], int(fields[1]), int(fields[19])


def _starter() -> tuple[int, int | None]:
    """The pid of the process that started this one (shells looked through) and its start
    time (None without ``/proc``)."""
    pid = os.getppid()
    for _ in range(4):
        stat = _stat(pid)
        if stat is None or stat[0] not in _SHELLS:
            break
        pid = stat[2]
    stat = _stat(pid)
    return pid, None if stat is None else stat[3]


def _alive(starter: tuple[int, int | None]) -> bool:
    """Whether the starter still runs (not a zombie, not a new process with its pid);
    without ``/proc``, whether it is still this process's parent."""
    pid, started = starter
    if started is None:
        return os.getppid() == pid
    stat = _stat(pid)
    return stat is not None and stat[1] not in ("Z", "X") and stat[3] == started
