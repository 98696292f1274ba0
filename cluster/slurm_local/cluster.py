"""A real two-node Slurm cluster on this host, for tests: munged, slurmctld and ``slurmd -N n1`` / ``-N n2``.

Everything (slurm.conf, cgroup.conf, the munge key and socket, spool, state, logs) lives in one temporary
directory; the daemons run in the foreground as children of this process and are stopped on teardown. Clients
reach the cluster through ``SLURM_CONF`` (``cluster.env()``). Installs nothing: see ``ensure_packages.sh``.

    with LocalSlurmCluster() as cluster:                      # or: python -m cluster.slurm_local.cluster
        subprocess.run(["sbatch", ...], env=cluster.env())

Both nodes are this host. As on a real cluster, their names resolve through the name service: while the cluster
runs, ``/etc/hosts`` maps n1 and n2 to their own loopback addresses (127.0.0.11, 127.0.0.12), and slurm.conf gives
no ``NodeAddr``, so slurmctld reaches each slurmd by its name and padnet-dist's launch layer finds the rendezvous
host by resolving the first name of ``scontrol show hostnames $SLURM_JOB_NODELIST``. ``stop()`` removes exactly
the lines ``start()`` added (tagged with this cluster's directory) and leaves the rest of ``/etc/hosts`` as it was.
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
from collections.abc import Mapping
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "srun")
NODE_ADDRS = {"n1": "127.0.0.11", "n2": "127.0.0.12"}  # every 127/8 address reaches this host's loopback
NODE_NAMES = tuple(NODE_ADDRS)
HOSTS_FILE = "/etc/hosts"
HOSTS_TAG = "# padnet-slurm-local"


class ClusterError(RuntimeError):
    """The cluster cannot start here (packages missing, not root, a daemon died); the message says why."""


def missing_requirements() -> str:
    """Why this host cannot run the cluster ("" when it can): programs missing or not root."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    missing = [p for p in DAEMONS + CLIENTS if shutil.which(p, path=search) is None]
    if missing:
        return f"missing {' '.join(missing)}: run `bash cluster/slurm_local/ensure_packages.sh` as root"
    if os.geteuid() != 0:
        return "the local Slurm cluster runs its daemons as root (SlurmUser=root): run the tests as root"
    return ""


def _free_port(num_consecutive: int = 1) -> int:
    """The first of ``num_consecutive`` TCP ports that are free on 127.0.0.1 right now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + num_consecutive > 65535:
            continue
        try:
            held = []
            for port in range(first, first + num_consecutive):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise ClusterError(f"no {num_consecutive} consecutive free ports on 127.0.0.1")


def slurm_conf(
    root: Path, *, ctld_port: int, slurmd_port: int, num_cpus_per_node: int, requeue_delay_s: int = 10
) -> str:
    """slurm.conf of a cluster whose nodes n1, n2 are this host (slurmd ports ``slurmd_port`` and the next)."""
    host = socket.gethostname()
    return f"""\
ClusterName=padnet-local
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: how long a requeued job waits before it may start again (Slurm default 120 s; short for tests)
AuthInfo=socket={root}/munge/munge.socket,cred_expire={requeue_delay_s}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# no systemd, no cgroups here: track processes by parentage, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerParameters=sched_interval=1
MessageTimeout=30
SlurmdTimeout=60
KillWait=10
InactiveLimit=0
MinJobAge=3600
NodeName=n[1-2] NodeHostname={host} Port={slurmd_port}-{slurmd_port + 1} CPUs={num_cpus_per_node} State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


def add_host_entries(hosts_text: str, tag: str) -> str:
    """``hosts_text`` (an /etc/hosts) with one line per node, each ending in ``tag`` so it can be removed."""
    lines = [f"{addr} {name} {tag}" for name, addr in NODE_ADDRS.items()]
    return hosts_text + ("" if not hosts_text or hosts_text.endswith("\n") else "\n") + "\n".join(lines) + "\n"


def remove_host_entries(hosts_text: str, tag: str) -> str:
    """``hosts_text`` without the lines ``add_host_entries`` added with ``tag``."""
    return "".join(line for line in hosts_text.splitlines(keepends=True) if not line.rstrip().endswith(tag))


def _write_hosts(text: str) -> None:
    # Atomic where /etc/hosts is a plain file; a container bind-mounts it (rename fails: EBUSY), so then in place.
    tmp = f"{HOSTS_FILE}.padnet-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, os.stat(HOSTS_FILE).st_mode & 0o7777)
        os.replace(tmp, HOSTS_FILE)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        with open(HOSTS_FILE, "w") as f:
            f.write(text)


class LocalSlurmCluster:
    """Start with ``start()`` (or ``with``); ``env()`` is the environment for Slurm clients; ``stop()`` ends it all.

    ``start_s`` is the measured time from launching munged until ``sinfo`` showed both nodes idle.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, num_cpus_per_node: int = 2) -> None:
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="slurm-local-"))
        self.num_cpus_per_node = num_cpus_per_node
        self.conf_path = self.root / "slurm.conf"
        self.start_s = 0.0
        self._procs: list[tuple[str, subprocess.Popen]] = []
        self._hosts_added = False

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with ``SLURM_CONF`` pointing at this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf_path)
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/sbin", "/sbin"])
        return env

    def __enter__(self) -> LocalSlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 60.0) -> None:
        """Write the config, start munged, slurmctld, two slurmd; return once both nodes are idle.

        Raises ``ClusterError`` naming the reason (and the daemon's log tail) when it cannot.
        """
        reason = missing_requirements()
        if reason:
            raise ClusterError(reason)
        started = time.monotonic()
        try:
            self._write_files()
            self._add_host_entries()
            self._start_munged()
            self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
            for node in NODE_NAMES:
                self._spawn(f"slurmd-{node}", ["slurmd", "-D", "-N", node])
            self._wait_idle(timeout_s)
        except BaseException:
            self.stop()
            raise
        self.start_s = time.monotonic() - started

    def stop(self) -> None:
        """Cancel the cluster's jobs, stop every daemon this object started (SIGTERM, then SIGKILL), remove its
        directory."""
        if self._procs and all(p.poll() is None for _, p in self._procs):
            self._cancel_jobs()
        # slurmd before slurmctld, munged last (the others authenticate through it)
        for name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._procs.remove((name, proc))
        self._remove_host_entries()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def _hosts_tag(self) -> str:
        return f"{HOSTS_TAG} {self.root}"

    def _add_host_entries(self) -> None:
        """Map the node names to their addresses in /etc/hosts; stale lines of a cluster killed before its
        ``stop()`` (its directory is gone) are dropped first. A name that already resolves elsewhere is refused."""
        text = Path(HOSTS_FILE).read_text()
        kept = "".join(
            line for line in text.splitlines(keepends=True)
            if HOSTS_TAG not in line or Path(line.split(HOSTS_TAG, 1)[1].strip()).is_dir()
        )  # fmt: skip
        if kept != text:
            _write_hosts(kept)
        for name, addr in NODE_ADDRS.items():
            try:
                found = socket.gethostbyname(name)
            except OSError:
                continue
            if found != addr:
                raise ClusterError(
                    f"node name {name} already resolves to {found}, not {addr}: remove it from {HOSTS_FILE}"
                )
        _write_hosts(add_host_entries(kept, self._hosts_tag))
        self._hosts_added = True

    def _remove_host_entries(self) -> None:
        if self._hosts_added:
            _write_hosts(remove_host_entries(Path(HOSTS_FILE).read_text(), self._hosts_tag))
            self._hosts_added = False

    def _cancel_jobs(self, timeout_s: float = 30.0) -> None:
        # A job step's slurmstepd and its tasks outlive slurmd: end them through Slurm while it still runs.
        subprocess.run(["scancel", "--partition=debug"], env=self.env(), capture_output=True, timeout=30)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = subprocess.run(["squeue", "--noheader"], env=self.env(), capture_output=True, text=True, timeout=30)
            if out.returncode != 0 or not out.stdout.strip():
                return
            time.sleep(0.5)

    def log_tail(self, name: str, num_lines: int = 20) -> str:
        """The last lines of a daemon's log (``slurmctld``, ``slurmd-n1``, ``munged``); "" if none."""
        path = self.root / "log" / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-num_lines:])

    def _write_files(self) -> None:
        for sub in ("state", "spool", "run", "log", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # munged refuses a key or socket in a directory others can write
        (self.root / "munge").chmod(0o700)
        self.conf_path.write_text(
            slurm_conf(
                self.root,
                ctld_port=_free_port(),
                slurmd_port=_free_port(len(NODE_NAMES)),
                num_cpus_per_node=self.num_cpus_per_node,
            )
        )
        (self.root / "cgroup.conf").write_text("# unused: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none\n")
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)

    def _start_munged(self) -> None:
        m = self.root / "munge"
        self._spawn(
            "munged",
            ["munged", "--foreground", "--force", f"--socket={m}/munge.socket", f"--key-file={m}/munge.key",
             f"--pid-file={m}/munged.pid", f"--seed-file={m}/munged.seed", f"--log-file={self.root}/log/munged.log"],
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not (m / "munge.socket").exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise ClusterError(f"munged did not create its socket in 15 s:\n{self.log_tail('munged')}")
            time.sleep(0.05)

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.out", "wb")  # noqa: SIM115 (the child holds it)
        with out:
            proc = subprocess.Popen(argv, env=self.env(), stdout=out, stderr=subprocess.STDOUT, cwd=self.root)
        self._procs.append((name, proc))

    def _check_alive(self) -> None:
        for name, proc in self._procs:
            if proc.poll() is not None:
                out = (self.root / "log" / f"{name}.out").read_text(errors="replace")[-2000:]
                raise ClusterError(f"{name} exited with code {proc.returncode}:\n{out}\n{self.log_tail(name)}")

    def _wait_idle(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        states: dict[str, str] = {}
        while True:
            self._check_alive()
            out = subprocess.run(
                ["sinfo", "--noheader", "--Node", "--format=%N %t"], env=self.env(), capture_output=True, text=True
            )
            states = dict(line.split() for line in out.stdout.splitlines() if len(line.split()) == 2)
            if all(states.get(n) == "idle" for n in NODE_NAMES):
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"nodes not idle after {timeout_s:.0f} s (sinfo: {states or out.stderr.strip()}):\n"
                    f"{self.log_tail('slurmctld')}\n{self.log_tail('slurmd-n1')}"
                )
            time.sleep(0.2)


def main() -> int:
    """Run the cluster until Ctrl-C or SIGTERM, printing how to reach it (a manual playground)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop() still runs: daemons end, /etc/hosts restored
    with LocalSlurmCluster() as cluster:
        print(f"two-node Slurm cluster up in {cluster.start_s:.1f} s; in another shell:")
        print(f"  export SLURM_CONF={cluster.conf_path}; sinfo")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
