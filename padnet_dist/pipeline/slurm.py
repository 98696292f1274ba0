"""The Slurm backend: each job is an ``sbatch`` of the very scripts in ``slurm/``; state from ``scontrol``/``sacct``.

``train`` jobs run ``slurm/train.sh``, ``eval`` jobs ``slurm/eval.sh`` and ``task`` jobs (data check, report, a
detached coordinator) ``slurm/task.sh``, sized from the ``JobSpec`` (``--nodes``, ``--ntasks-per-node``,
``--gpus-per-node``, ``--cpus-per-task``) plus ``pipeline.slurm_args`` (partition, account, time), which win.
The backend id is the Slurm job id.

State: ``scontrol show job`` while slurmctld remembers the job (running, pending, and ``MinJobAge`` seconds after
it ended); then ``sacct`` where the cluster keeps accounting; then the exit record the script itself writes
(``{record_dir}/{job id}.exit.json``) on clusters with neither. A training job that stops with exit 75 (a committed
checkpoint after SIGTERM, preemption or the time-limit signal) requeues itself (same id: it shows ``PENDING``
again) up to ``PADNET_MAX_REQUEUES`` times; past that it ends ``FAILED`` with exit 75, reported ``INTERRUPTED``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from padnet_dist.config import Config
from padnet_dist.errors import UserError
from padnet_dist.pipeline.backend import EXIT_INTERRUPTED, JobSpec, JobState, JobStatus
from padnet_dist.storage.url import is_s3, local_path

SLURM_DIR = Path(__file__).resolve().parents[2] / "slurm"
SCRIPTS = {"train": "train.sh", "eval": "eval.sh", "task": "task.sh"}
RECORD_DIR_NAME = "slurm-jobs"  # below run.dir (local) or the submit directory (run.dir on S3)
CLIENT_TIMEOUT_S = 60
TOKEN_PREFIX = "padnet-token:"  # the job's --comment: the coordinator's token for it (see Backend.find)

PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESV_DEL_HOLD",
                  "SPECIAL_EXIT"}  # fmt: skip
RUNNING_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
# A preempted job had SIGTERM and its grace time to commit; a timed-out one resumes from its last commit.
INTERRUPTED_STATES = {"PREEMPTED", "TIMEOUT"}
# Variables of an enclosing job (a detached coordinator runs inside one) must not reach the jobs it submits:
# sbatch would read SBATCH_*/SLURM_* as options and srun would inherit the outer step's geometry.
INHERITED_PREFIXES = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")
# PHASE too: slurm/train.sh appends phase=$PHASE to the job's arguments.
INHERITED_NAMES = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                   "MASTER_PORT", "PHASE"}  # fmt: skip


def job_state(slurm_state: str, exit_code: int | None) -> JobState:
    """Our state for Slurm's (``scontrol``'s ``JobState`` or ``sacct``'s ``State``, e.g. ``CANCELLED by 0``)."""
    state = slurm_state.split()[0].rstrip("+") if slurm_state else ""
    if state in PENDING_STATES:
        return JobState.PENDING
    if state in RUNNING_STATES:
        return JobState.RUNNING
    if state == "COMPLETED":
        return JobState.SUCCEEDED
    if state == "CANCELLED":
        return JobState.CANCELLED
    if state in INTERRUPTED_STATES or (state == "FAILED" and exit_code == EXIT_INTERRUPTED):
        return JobState.INTERRUPTED
    return JobState.FAILED if state else JobState.UNKNOWN


def _exit_code(field: str) -> int | None:
    """``ExitCode=rc:signal`` -> the shell's view: ``rc``, or ``128 + signal`` for a job killed by one."""
    m = re.fullmatch(r"(\d+):(\d+)", field or "")
    if not m:
        return None
    rc, sig = int(m.group(1)), int(m.group(2))
    return 128 + sig if sig and not rc else rc


def _unix_s(field: str) -> float | None:
    """Slurm's ``2026-11-30T04:53:00`` (the cluster's local time) as unix seconds; None for Unknown/None."""
    try:
        return time.mktime(time.strptime(field, "%Y-%m-%dT%H:%M:%S"))
    except (TypeError, ValueError):
        return None


def make_backend(cfg: Config) -> SlurmBackend:
    """The pipeline's Slurm backend for a run (``padnet_dist.pipeline.backends.backend_for``)."""
    return SlurmBackend.from_config(cfg)


def record_dir_for(run_dir: str, submit_dir: str) -> str:
    """Where job records go: below a local ``run.dir``, else below the submit directory (shared by the nodes)."""
    if is_s3(run_dir) or not run_dir:
        return str(Path(submit_dir) / f".padnet-{RECORD_DIR_NAME}")
    return str(Path(local_path(run_dir)) / "pipeline" / RECORD_DIR_NAME)


class SlurmBackend:
    """``sbatch``/``scontrol``/``scancel`` against the cluster of ``SLURM_CONF`` (or the host's default).

    ``record_dir`` (a directory every node sees) keeps one ``{id}.json`` per submitted job (its name, kind, output
    file) and the scripts' ``{id}.exit.json``; a later coordinator finds a job's log and end from the id alone.
    ``submit_dir`` is the jobs' working directory (relative ``--config`` paths are read there).
    """

    name = "slurm"

    def __init__(
        self,
        *,
        record_dir: str,
        slurm_args: Sequence[str] = (),
        submit_dir: str | None = None,
        scripts_dir: str | os.PathLike = SLURM_DIR,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.record_dir = Path(record_dir)
        self.slurm_args = tuple(slurm_args)
        self.submit_dir = str(Path(submit_dir or os.getcwd()).resolve())
        self.scripts_dir = Path(scripts_dir)
        self.environ = dict(os.environ if environ is None else environ)

    @classmethod
    def from_config(cls, cfg: Config, *, submit_dir: str | None = None) -> SlurmBackend:
        submit_dir = str(Path(submit_dir or os.getcwd()).resolve())
        return cls(
            record_dir=record_dir_for(cfg.run.dir, submit_dir),
            slurm_args=cfg.pipeline.slurm_args,
            submit_dir=submit_dir,
        )

    # -- submit -------------------------------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> str:
        """``sbatch --parsable`` the kind's script; returns the job id. ``UserError`` if sbatch refuses."""
        cmd = self.sbatch_command(spec)
        self.record_dir.mkdir(parents=True, exist_ok=True)
        log = self._log_path(spec)
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        proc = self._run(cmd, env=self._job_env(spec))
        if proc.returncode != 0:
            raise UserError(
                f"sbatch refused job {spec.name} ({proc.stderr.strip() or proc.stdout.strip()}): check "
                "pipeline.slurm_args (partition, account, time) and `sinfo`"
            )
        job_id = proc.stdout.strip().split(";")[0]  # "id" or "id;cluster"
        record = {"name": spec.name, "kind": spec.kind, "log": log.replace("%j", job_id), "submitted_at": time.time()}
        _write_json_atomic(self.record_dir / f"{job_id}.json", record)
        return job_id

    def sbatch_command(self, spec: JobSpec) -> list[str]:
        """The ``sbatch`` command line of ``spec`` (sizes first, then ``pipeline.slurm_args``, which win)."""
        script = SCRIPTS.get(spec.kind)
        if script is None:
            raise ValueError(f"JobSpec.kind='{spec.kind}' is not one of {', '.join(SCRIPTS)}")
        args = list(spec.argv)
        if spec.kind != "task":
            # slurm/train.sh and slurm/eval.sh run `padnet-dist train|eval "$@"`: the command is theirs
            if not args or args[0] != spec.kind:
                raise ValueError(
                    f"JobSpec {spec.name}: a {spec.kind} job's argv starts with '{spec.kind}', not {args[:1]}"
                )
            args = args[1:]
        sizes = [f"--nodes={spec.nodes}", f"--ntasks-per-node={spec.ranks_per_node}",
                 f"--gpus-per-node={spec.gpus_per_rank * spec.ranks_per_node}", f"--cpus-per-task={spec.cpus_per_rank}"]  # fmt: skip
        token = [f"--comment={TOKEN_PREFIX}{spec.token}"] if spec.token else []
        return [
            "sbatch", "--parsable", f"--job-name=padnet-{spec.name}", f"--output={self._log_path(spec)}",
            "--open-mode=append", *token, *sizes, *self.slurm_args, str(self.scripts_dir / script), *args,
        ]  # fmt: skip

    def _log_path(self, spec: JobSpec) -> str:
        # sbatch writes the output file on the first node: a path, never s3:// (then beside the records)
        if spec.log_url and not is_s3(spec.log_url):
            return str(Path(self.submit_dir, local_path(spec.log_url)).resolve())
        return str((self.record_dir / f"{spec.name}-%j.out").resolve())

    def _job_env(self, spec: JobSpec) -> dict[str, str]:
        env = {
            k: v
            for k, v in self.environ.items()
            if k not in INHERITED_NAMES and (not k.startswith(INHERITED_PREFIXES) or k == "SLURM_CONF")
        }
        # the jobs run this environment's padnet-dist even when the coordinator was started by its full path
        bin_dir = os.path.dirname(sys.executable)
        if bin_dir not in env.get("PATH", "").split(os.pathsep):
            env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
        env.update(PYTHONUNBUFFERED="1", PADNET_JOB_RECORD_DIR=str(self.record_dir.resolve()),
                   PADNET_SUBMIT_TOKEN=spec.token)  # fmt: skip
        env.update(spec.env)
        return env

    def find(self, token: str) -> str | None:
        """The job whose comment carries ``token`` while slurmctld remembers it, else the one whose exit record (the
        scripts write ``PADNET_SUBMIT_TOKEN`` into it) does."""
        if not token:
            return None
        proc = self._run(["squeue", "--noheader", "--states=all", "--format=%i|%k"])
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            job_id, _, comment = line.strip().partition("|")
            if comment == f"{TOKEN_PREFIX}{token}":
                return job_id.split("_")[0]
        for record in self.record_dir.glob("*.exit.json"):
            if (self._read_json(record.name) or {}).get("token") == token:
                return record.name.removesuffix(".exit.json")
        return None

    # -- state --------------------------------------------------------------------------------------------------
    def status(self, job_id: str) -> JobStatus:
        submitted = self._read_json(f"{job_id}.json") or {}
        log = submitted.get("log", "")
        found = self._scontrol(job_id) or self._sacct(job_id) or self._exit_record(job_id)
        if found is None:
            return JobStatus(JobState.UNKNOWN, log=log)
        state, exit_code, started_at, ended_at = found
        return JobStatus(state, exit_code=exit_code, started_at=started_at, ended_at=ended_at, log=log)

    def _scontrol(self, job_id: str) -> tuple[JobState, int | None, float | None, float | None] | None:
        proc = self._run(["scontrol", "show", "job", "--oneliner", job_id])
        if proc.returncode != 0 or "JobState=" not in proc.stdout:
            return None  # "Invalid job id specified": slurmctld has forgotten it (MinJobAge)
        fields = dict(re.findall(r"(\w+)=(\S*)", proc.stdout))
        exit_code = _exit_code(fields.get("ExitCode", ""))
        state = job_state(fields["JobState"], exit_code)
        started = _unix_s(fields.get("StartTime", "")) if state != JobState.PENDING else None
        ended = _unix_s(fields.get("EndTime", "")) if state.done else None  # a running job's EndTime is its limit
        return state, exit_code if state.done else None, started, ended

    def _sacct(self, job_id: str) -> tuple[JobState, int | None, float | None, float | None] | None:
        if shutil.which("sacct", path=self.environ.get("PATH")) is None:
            return None
        proc = self._run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,ExitCode,Start,End"])
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if proc.returncode != 0 or not lines:
            return None  # no accounting storage on this cluster, or no record
        slurm_state, code, start, end = (lines[-1].split("|") + ["", "", "", ""])[:4]
        exit_code = _exit_code(code)
        state = job_state(slurm_state, exit_code)
        return state, exit_code if state.done else None, _unix_s(start), _unix_s(end) if state.done else None

    def _exit_record(self, job_id: str) -> tuple[JobState, int | None, float | None, float | None] | None:
        record = self._read_json(f"{job_id}.exit.json")
        if record is None:
            return None
        exit_code = int(record["exit_code"])
        state = {0: JobState.SUCCEEDED, EXIT_INTERRUPTED: JobState.INTERRUPTED}.get(exit_code, JobState.FAILED)
        return state, exit_code, record.get("started_at"), record.get("ended_at")

    def _read_json(self, name: str) -> dict | None:
        try:
            return json.loads((self.record_dir / name).read_text())
        except (OSError, ValueError):
            return None

    # -- stop, cancel -------------------------------------------------------------------------------------------
    def stop(self, job_id: str) -> None:
        """SIGTERM to the job's ranks: training ranks commit and exit 75, after which ``slurm/train.sh`` requeues
        the job as after a preemption (up to ``PADNET_MAX_REQUEUES``; ``cancel`` ends it for good). A ``task`` job
        runs in the batch step, which only ``--full`` reaches; for the others ``--full`` would also reach ``srun``,
        which then kills the ranks before they commit. A job still pending is cancelled."""
        if self.status(job_id).state == JobState.PENDING:
            self.cancel(job_id)
            return
        kind = (self._read_json(f"{job_id}.json") or {}).get("kind")
        self._run(["scancel", "--signal=TERM", *(["--full"] if kind == "task" else []), job_id])

    def cancel(self, job_id: str) -> None:
        self._run(["scancel", job_id])

    def _run(self, cmd: list[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        exe = shutil.which(cmd[0], path=(env or self.environ).get("PATH"))
        if exe is None:
            raise UserError(
                f"{cmd[0]} not found: --backend slurm runs Slurm's client commands; run on a login node "
                "(or add their directory to PATH)"
            )
        try:
            return subprocess.run(
                [exe, *cmd[1:]], cwd=self.submit_dir, env=dict(env or self.environ), capture_output=True,
                text=True, timeout=CLIENT_TIMEOUT_S,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise UserError(f"{' '.join(cmd[:3])} did not answer in {CLIENT_TIMEOUT_S} s: is slurmctld up?") from None


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, path)
