"""Ghost runs: MLflow runs left ``RUNNING`` by a process that died (SIGKILL, the OOM killer).

Every synthmed run records who owns it (:func:`owner_tags`): ``synthmed.host``, ``synthmed.pid``,
``synthmed.pid_start`` (the process's start time, so a reused pid is told apart) and
``synthmed.started`` (a wall-clock start stamp). At the start of every synthmed run and sweep,
:func:`reap` looks at the ``RUNNING`` runs of that experiment and ends those whose owner is
*provably* dead — same host, and the pid is gone or now belongs to a process started at another
time — as ``KILLED`` with a ``synthmed.failure_reason`` tag. Runs of other hosts, and runs without
owner tags (other tools, older synthmed), are never touched: nothing here can prove them dead.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from synthmed.paths import pid_alive
from synthmed.tracking.names import TAG_FAILURE_REASON as TAG_REASON
from synthmed.tracking.names import TAG_HOST, TAG_PID, TAG_PID_START, TAG_STARTED

__all__ = ["TAG_HOST", "TAG_PID", "TAG_PID_START", "TAG_REASON", "is_dead", "owner_tags", "process_start", "reap"]


def process_start(pid: int) -> str | None:
    """A stable identity of process ``pid``'s start (``<boot id>:<start ticks>``), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    return f"{boot}:{fields[19]}"  # field 22: start time in clock ticks since boot


def owner_tags() -> dict[str, str]:
    """The tags that let a later process prove this one dead."""
    tags = {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid()), TAG_STARTED: f"{time.time():.3f}"}
    start = process_start(os.getpid())
    if start:
        tags[TAG_PID_START] = start
    return tags


def is_dead(tags: dict[str, str]) -> str | None:
    """Why the owner of a run with these tags is provably dead, else None (alive, or unknowable)."""
    if tags.get(TAG_HOST) != socket.gethostname() or not tags.get(TAG_PID, "").isdigit():
        return None
    pid = int(tags[TAG_PID])
    if pid == os.getpid():
        return None
    if not pid_alive(pid):
        return f"process {pid} on {tags[TAG_HOST]} ended without ending this run (killed or crashed)"
    recorded, now = tags.get(TAG_PID_START), process_start(pid)
    if recorded and now and recorded != now:
        return f"process {pid} on {tags[TAG_HOST]} ended without ending this run (its pid now belongs to another process)"
    return None


def reap(client: Any, experiment_id: str, *, keep: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Mark the ghost runs of one experiment KILLED with a reason; returns their run ids."""
    runs = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
    reaped = []
    for run in runs:
        if run.info.run_id in keep:
            continue
        reason = is_dead(run.data.tags)
        if reason is None:
            continue
        client.set_tag(run.info.run_id, TAG_REASON,
                       f"{reason}; marked KILLED by synthmed pid {os.getpid()} at {time.strftime('%Y-%m-%d %H:%M:%S')}")
        client.set_terminated(run.info.run_id, "KILLED")
        reaped.append(run.info.run_id)
    return reaped
