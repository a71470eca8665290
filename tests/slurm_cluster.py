"""A one-node Slurm cluster for the tests: Debian's ``munge``, ``slurmctld`` and ``slurmd``
installed with apt-get when missing (root only), configured under a temporary folder (no
accounting, like a small lab cluster), each daemon started in the foreground and stopped by its
PID. ``python tests/slurm_cluster.py FOLDER`` starts one by hand (Ctrl-C stops it)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client")
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


def unavailable() -> str | None:
    """Why a cluster cannot be started here (None: it can), installing the packages if needed;
    as root with apt-get, a failed installation raises (a CI machine must run the test)."""
    if all(shutil.which(p) or Path("/usr/sbin", p).exists() for p in PROGRAMS):
        return None if os.geteuid() == 0 else "the Slurm daemons need root (munged and slurmd run as root here)"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "Slurm is not installed and cannot be: installing munge/slurmctld/slurmd needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    for command in (["apt-get", "update", "-q", *lock],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", *lock, *PACKAGES]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command[:2])} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONFIG = """ClusterName=gradinvtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={folder}/munge.socket
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=300
SchedulerParameters=sched_interval=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    """A running one-node cluster; ``env`` points the Slurm commands at it (``SLURM_CONF``)."""

    folder: Path
    cpus: int
    daemons: list = field(default_factory=list)

    @property
    def env(self) -> dict:
        return {"SLURM_CONF": str(self.folder / "slurm.conf")}

    def command(self, *args: str) -> str:
        done = subprocess.run(args, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=30)
        return done.stdout

    def queue(self) -> list[str]:
        """``JOBID|STATE`` of every job in the queue, array tasks one by one."""
        return self.command("squeue", "-h", "-r", "-o", "%i|%T").split()

    def wait_until_empty(self, timeout_s: float = 60) -> list[str]:
        """The queue once it is empty, or what is left in it after ``timeout_s``."""
        end = time.monotonic() + timeout_s
        while (left := self.queue()) and time.monotonic() < end:
            time.sleep(0.5)
        return left

    def stop(self) -> None:
        """Cancel what is left and wait for the queue to drain (a job step outlives a stopped
        slurmd), then stop the daemons by their PIDs."""
        if len(self.daemons) == 3:
            self.command("scancel", "--user", str(os.geteuid()))
            self.wait_until_empty(60)
        for daemon in reversed(self.daemons):
            daemon.terminate()
        for daemon in reversed(self.daemons):
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        self.daemons.clear()
        for pid in self.leftovers():   # job steps still being killed when slurmd stopped
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def leftovers(self) -> list[int]:
        """PIDs of the processes this cluster started (their environment names its SLURM_CONF)."""
        marker = f"SLURM_CONF={self.env['SLURM_CONF']}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and int(entry.name) != os.getpid() and \
                        marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids


def start(folder: Path, cpus: int = 2, timeout_s: float = 60) -> Cluster:
    """munged, slurmctld and slurmd under ``folder``, started in the foreground; returns once the
    node is idle (else stops them and raises with the daemons' logs)."""
    folder = Path(folder).resolve()
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    (folder / "slurm.conf").write_text(CONFIG.format(host=host, folder=folder, cpus=cpus, ctld_port=_free_port(),
                                                     d_port=_free_port()))
    cluster = Cluster(folder, cpus)
    env = {**os.environ, **cluster.env}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "env": env}
    sbin = lambda name: shutil.which(name) or f"/usr/sbin/{name}"
    cluster.daemons.append(subprocess.Popen(
        [sbin("munged"), "-F", "--force", f"--key-file={key}", f"--socket={folder}/munge.socket",
         f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log", f"--seed-file={folder}/munged.seed"],
        **quiet))
    try:
        _wait(lambda: (folder / "munge.socket").exists(), timeout_s, "munged did not create its socket")
        cluster.daemons.append(subprocess.Popen([sbin("slurmctld"), "-D", "-i", "-f", str(folder / "slurm.conf")],
                                                **quiet))
        cluster.daemons.append(subprocess.Popen([sbin("slurmd"), "-D", "-f", str(folder / "slurm.conf"), "-N", host],
                                                **quiet))
        _wait(lambda: cluster.command("sinfo", "-h", "-o", "%T").strip() == "idle", timeout_s,
              "the node did not become idle")
    except RuntimeError as exc:
        cluster.stop()
        raise RuntimeError(f"{exc}; the daemons' logs:\n{logs(folder)}") from None
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(ready, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > end:
            raise RuntimeError(f"{what} within {timeout_s:.0f} s")
        time.sleep(0.3)


def logs(folder: Path) -> str:
    """The daemons' last log lines (for a failing test's message)."""
    return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                     for p in sorted(Path(folder).glob("*.log")))


if __name__ == "__main__":
    reason = unavailable()
    if reason:
        sys.exit(reason)
    started = start(Path(sys.argv[1]))
    print(f"export SLURM_CONF={started.env['SLURM_CONF']}   # Ctrl-C stops the cluster")
    try:
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        started.stop()
