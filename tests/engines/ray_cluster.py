"""A Ray cluster of two nodes on this machine, for the multi-node tests (not a test itself).

:func:`start_cluster` runs ``ray start --head`` and ``ray start --address`` as a user
would, each node with one CPU and a custom resource of its own (``fedsim_head``,
``fedsim_node2``), in a temporary directory of its own; :meth:`Cluster.stop` ends every
process of that cluster by its id (the processes that name the directory and their
children): ``ray stop --force`` would end every Ray on the machine, other users' too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        pid, ppid, *args = line.split(None, 2)
        rows[int(pid)] = (int(ppid), args[0] if args else "")
    return rows


@dataclass
class Cluster:
    address: str
    temp_dir: str

    def pids(self) -> list[int]:
        """The cluster's processes: those that name its directory, and their descendants."""
        rows = _processes()
        found = {pid for pid, (_, args) in rows.items() if self.temp_dir in args and pid != os.getpid()}
        grew = True
        while grew:
            kids = {pid for pid, (ppid, _) in rows.items() if ppid in found and pid != os.getpid()}
            grew = not kids <= found
            found |= kids
        return sorted(found)

    def raylet_pid(self, node_id: str) -> int:
        """The raylet of one node (``ray.nodes()``'s ``NodeID``)."""
        rows = _processes()
        (pid,) = [p for p, (_, args) in rows.items() if "raylet/raylet" in args and f"--node_id={node_id}" in args]
        return pid

    def stop(self) -> None:
        for _ in range(3):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_cluster() -> Cluster:
    """Two Ray nodes on this machine (the head and a second one), one CPU each."""
    temp_dir = tempfile.mkdtemp(prefix="fsray", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    cluster = Cluster(f"127.0.0.1:{port}", temp_dir)
    common = ["--num-cpus=1", "--object-store-memory=100000000", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    try:
        for args in (
            ["--head", f"--port={port}", "--include-dashboard=false", '--resources={"fedsim_head": 1}'],
            [f"--address={cluster.address}", '--resources={"fedsim_node2": 1}'],
        ):
            subprocess.run([RAY, "start", *args, *common], env=env, check=True, capture_output=True, timeout=120)
    except BaseException:
        cluster.stop()
        raise
    return cluster
