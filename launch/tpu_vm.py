r"""Cloud TPU VM launcher: create a slice, install the code on every worker, run a job on all workers, babysit it.

    python launch/tpu_vm.py --name=tsp --zone=us-central2-b --accelerator=v4-32 [--project=P] [--dry-run] create \
        [--spot] [--queued]
    python launch/tpu_vm.py --name=tsp --zone=us-central2-b --accelerator=v4-32 setup [--repo=URL --ref=REF]
    python launch/tpu_vm.py --name=tsp --zone=us-central2-b --accelerator=v4-32 run -- \
        python -m tsp_jax.train --config=configs/tpu.py:v4_32 --workdir=gs://BUCKET/tsp
    python launch/tpu_vm.py --name=tsp --zone=us-central2-b --accelerator=v4-32 fetch --remote=runs/tsp --local=.
    python launch/tpu_vm.py --name=tsp --zone=us-central2-b --accelerator=v4-32 status | delete
    python launch/tpu_vm.py --name=tsp --zone=us-central2-b --accelerator=v4-32 babysit [--spot] -- python -m ...

Every subcommand is a short list of `gcloud compute tpus ...` command lines; `--dry-run` prints them (one per
line, prefixed with `+ `) and runs nothing, so the exact commands are tested offline (tests/test_launch.py).

- `create`: `tpu-vm create` (or, with `--queued`, a queued resource whose node has the same name) with the
  runtime version of the accelerator's generation.
- `setup`: packs the working tree (tracked and untracked, non-ignored files: what `git ls-files -co
  --exclude-standard` lists) and copies it to every worker, or clones `--repo` at `--ref` there; then a Python 3.11
  venv (uv) with the runtime `requirements.txt` (not requirements-test.txt: no test tools, no torch) plus
  `jax[tpu]` at the pinned jax version and `gcsfs` (gs:// workdirs), and
  copies each `--shared` folder (the data) to `~/shared/`, next to the repo as the configs expect.
- `run`: the same command on every worker (`ssh --worker=all`), in the repo with the venv active and
  `TSP_DISTRIBUTED=1` on multi-host slices (tsp_jax.distributed then calls `jax.distributed.initialize()`, which
  reads the coordinator and process ids from the TPU metadata); each worker's output is pulled back live into
  `<logs>/<name>/<run id>/<worker>.log` (`--output-directory`).
- `fetch`: copies a folder back from worker 0 (a local workdir; gs:// workdirs need no copy: `gcloud storage cp -r`).
- `babysit`: loops until the run succeeds: (re)creates the slice when it is missing or not READY (spot
  preemption), sets it up, runs the command; a run that fails on a healthy slice is a real error and stops the
  loop. The job must resume from its checkpoints (tsp_jax.train does when `--workdir` holds them, e.g. gs://).

Only the standard library is used: the launcher runs on a workstation with nothing but gcloud installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_DIR = "~/tsp_jax"  # the code's folder on every worker
REMOTE_ARCHIVE = "tsp_jax.tar.gz"  # in the home folder of every worker

# Per generation: TPU software (runtime) version for JAX, TensorCores per chip, chips per host of multi-host slices,
# and the largest single-host slice in chips. The number in an accelerator type counts TensorCores on v4/v5p and
# chips on v5e/v6e.
GENERATIONS = {
    "v4": dict(runtime="tpu-ubuntu2204-base", cores_per_chip=2, chips_per_host=4, single_host_chips=4),
    "v5litepod": dict(runtime="v2-alpha-tpuv5-lite", cores_per_chip=1, chips_per_host=4, single_host_chips=8),
    "v5p": dict(runtime="v2-alpha-tpuv5", cores_per_chip=2, chips_per_host=4, single_host_chips=4),
    "v6e": dict(runtime="v2-alpha-tpuv6e", cores_per_chip=1, chips_per_host=4, single_host_chips=8),
}


@dataclasses.dataclass(frozen=True)
class Accelerator:
  """A TPU slice type such as `v4-32` (generation, chips and hosts derived from the name)."""
  name: str
  generation: str
  chips: int
  hosts: int

  @property
  def runtime(self) -> str:
    return GENERATIONS[self.generation]["runtime"]

  @classmethod
  def parse(cls, name: str) -> Accelerator:
    """`v4-32` -> 16 chips on 4 hosts; `v5litepod-16` -> 16 chips on 4 hosts; `v5p-8` -> 4 chips on 1 host."""
    m = re.fullmatch(r"(v4|v5litepod|v5p|v6e)-(\d+)", name)
    if not m:
      raise ValueError(f"unknown accelerator type {name!r}; expected one of {sorted(GENERATIONS)} followed by "
                       "-<count>, e.g. v4-32, v5litepod-16, v5p-8")
    gen = GENERATIONS[m.group(1)]
    count = int(m.group(2))
    if count % gen["cores_per_chip"]:
      raise ValueError(f"{name}: {m.group(1)} counts TensorCores, {gen['cores_per_chip']} per chip")
    chips = count // gen["cores_per_chip"]
    hosts = 1 if chips <= gen["single_host_chips"] else chips // gen["chips_per_host"]
    return cls(name=name, generation=m.group(1), chips=chips, hosts=hosts)


class Shell:
  """Runs command lines, echoing each as `+ cmd`; with dry_run it only echoes (captures return '')."""

  def __init__(self, dry_run: bool, out=None):
    self.dry_run = dry_run
    self.out = out or sys.stdout

  def echo(self, line: str) -> None:
    print(line, file=self.out, flush=True)

  def call(self, cmd: Sequence[str]) -> int:
    """Runs cmd with inherited stdio; returns its exit status (0 in dry-run)."""
    self.echo("+ " + shlex.join(cmd))
    return 0 if self.dry_run else subprocess.call(list(cmd))

  def capture(self, cmd: Sequence[str]) -> tuple[int, str]:
    """Runs cmd and returns (exit status, stripped stdout); (0, '') in dry-run."""
    self.echo("+ " + shlex.join(cmd))
    if self.dry_run:
      return 0, ""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout.strip()


def jax_version(requirements: str) -> str:
  """The `jax==X` pin of a requirements file (jax[tpu] is installed at the same version)."""
  with open(requirements, encoding="utf-8") as f:
    for line in f:
      m = re.match(r"\s*jax==([\w.]+)", line)
      if m:
        return m.group(1)
  raise ValueError(f"{requirements} pins no jax version")


def pack(repo: str, archive: str) -> int:
  """Writes repo's tracked and untracked non-ignored files to a .tar.gz; returns the number of files."""
  names = subprocess.run(["git", "-C", repo, "ls-files", "-z", "-co", "--exclude-standard"], check=True,
                         capture_output=True, text=True).stdout.split("\0")
  names = sorted(n for n in names if n and os.path.isfile(os.path.join(repo, n)))
  with tarfile.open(archive, "w:gz") as tar:
    for n in names:
      tar.add(os.path.join(repo, n), arcname=n)
  return len(names)


class TpuVm:
  """The gcloud command lines of one TPU slice."""

  def __init__(self, name: str, zone: str, accelerator: str, project: str | None, shell: Shell,
               repo: str = REPO):
    self.name = name
    self.zone = zone
    self.acc = Accelerator.parse(accelerator)
    self.project = project
    self.shell = shell
    self.repo = repo

  def _where(self) -> list[str]:
    return [f"--zone={self.zone}"] + ([f"--project={self.project}"] if self.project else [])

  def _tpu_vm(self, verb: str, *args: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, *args, *self._where()]

  def _queued(self, verb: str, *args: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "queued-resources", verb, *args, *self._where()]

  def ssh(self, command: str, worker: str = "all", *extra: str) -> list[str]:
    """`tpu-vm ssh` running `command` on `worker` (an index or all)."""
    return self._tpu_vm("ssh", self.name, f"--worker={worker}", f"--command={command}", *extra)

  def create(self, spot: bool = False, queued: bool = False, runtime: str | None = None) -> int:
    """Creates the slice (directly, or as a queued resource whose node is named like it)."""
    version = runtime or self.acc.runtime
    if queued:
      cmd = self._queued("create", self.name, f"--node-id={self.name}", f"--accelerator-type={self.acc.name}",
                         f"--runtime-version={version}")
    else:
      cmd = self._tpu_vm("create", self.name, f"--accelerator-type={self.acc.name}", f"--version={version}")
    return self.shell.call(cmd + (["--spot"] if spot else []))

  def setup(self, repo_url: str | None = None, ref: str = "main", shared: Sequence[str] = ()) -> int:
    """Puts the code on every worker (archive of the working tree, or a clone), installs the venv, and copies
    each `shared` folder (e.g. ../shared/data) to ~/shared/<name> (where the configs' defaults look)."""
    if repo_url:
      fetch = (f"rm -rf {REMOTE_DIR} && git clone -q {shlex.quote(repo_url)} {REMOTE_DIR} && "
               f"git -C {REMOTE_DIR} checkout -q {shlex.quote(ref)}")
    else:
      archive = os.path.join(tempfile.gettempdir(), f"tsp_jax-{self.name}.tar.gz")
      if self.shell.dry_run:
        self.shell.echo(f"# pack {self.repo} (git ls-files -co --exclude-standard) -> {archive}")
      else:
        self.shell.echo(f"# packed {pack(self.repo, archive)} files -> {archive}")
      rc = self.shell.call(self._tpu_vm("scp", archive, f"{self.name}:{REMOTE_ARCHIVE}", "--worker=all"))
      if rc:
        return rc
      fetch = f"rm -rf {REMOTE_DIR} && mkdir -p {REMOTE_DIR} && tar -xzf ~/{REMOTE_ARCHIVE} -C {REMOTE_DIR}"
    jax = jax_version(os.path.join(self.repo, "requirements.txt"))
    install = (f"cd {REMOTE_DIR} && python3 -m pip install -q --user uv && "
               f"~/.local/bin/uv venv -q --python 3.11 .venv && "
               f"~/.local/bin/uv pip install -q --python .venv/bin/python -r requirements.txt "
               f"\"jax[tpu]=={jax}\" gcsfs")
    rc = self.shell.call(self.ssh(f"set -euo pipefail; {fetch} && {install} && mkdir -p ~/shared"))
    for folder in shared:
      rc = rc or self.shell.call(self._tpu_vm("scp", "--recurse", os.path.normpath(folder), f"{self.name}:shared/",
                                              "--worker=all"))
    return rc

  def run(self, command: Sequence[str], logs: str, run_id: str) -> int:
    """Runs `command` on every worker in the repo with the venv; worker logs go to <logs>/<name>/<run_id>/."""
    if not command:
      raise ValueError("run needs a command after --, e.g. -- python -m tsp_jax.train --config=...")
    env = "TSP_DISTRIBUTED=1 " if self.acc.hosts > 1 else ""
    remote = f"cd {REMOTE_DIR} && . .venv/bin/activate && {env}{shlex.join(command)}"
    out_dir = os.path.join(logs, self.name, run_id)
    if not self.shell.dry_run:
      os.makedirs(out_dir, exist_ok=True)
    return self.shell.call(self.ssh(remote, "all", f"--output-directory={out_dir}"))

  def fetch(self, remote: str, local: str) -> int:
    """Copies `remote` (a path relative to the repo on worker 0, e.g. a local workdir) into `local`."""
    return self.shell.call(self._tpu_vm("scp", "--recurse", f"{self.name}:tsp_jax/{remote}", local, "--worker=0"))

  def state(self) -> str:
    """The node's state (READY, CREATING, PREEMPTED, ...), or '' when it does not exist."""
    rc, out = self.shell.capture(self._tpu_vm("describe", self.name, "--format=value(state)"))
    return out if rc == 0 else ""

  def status(self, queued: bool = False) -> int:
    """Prints the node's (and with `queued`, the queued resource's) state."""
    rc = self.shell.call(self._tpu_vm("describe", self.name, "--format=value(state,acceleratorType,health)"))
    if queued:
      rc = self.shell.call(self._queued("describe", self.name, "--format=value(state.state)")) or rc
    return rc

  def delete(self, queued: bool = False) -> int:
    """Deletes the slice (with `queued`, the queued resource and its node)."""
    if queued:
      return self.shell.call(self._queued("delete", self.name, "--force", "--quiet"))
    return self.shell.call(self._tpu_vm("delete", self.name, "--quiet"))

  def wait_ready(self, poll_s: float, timeout_s: float) -> bool:
    """Polls the node's state until READY (True) or timeout (False); one poll in dry-run."""
    deadline = time.monotonic() + timeout_s
    while True:
      if self.state() == "READY" or self.shell.dry_run:
        return True
      if time.monotonic() > deadline:
        return False
      time.sleep(poll_s)

  def babysit(self, command: Sequence[str], logs: str, run_id: str, spot: bool, queued: bool, max_restarts: int,
              poll_s: float, ready_timeout_s: float, repo_url: str | None = None, ref: str = "main",
              shared: Sequence[str] = ()) -> int:
    """Runs `command` to completion across preemptions: recreate + setup + run while the slice is lost."""
    restarts = 0
    while True:
      state = self.state()
      if state != "READY":
        self.shell.echo(f"# {self.name}: state {state or 'missing'}: (re)creating")
        if state:
          self.delete(queued)
        rc = self.create(spot, queued)
        if rc or not self.wait_ready(poll_s, ready_timeout_s):
          return rc or 1
        rc = self.setup(repo_url, ref, shared)
        if rc:
          return rc
      rc = self.run(command, logs, f"{run_id}-{restarts}")
      if rc == 0:
        return 0
      state = self.state()
      if state == "READY":
        self.shell.echo(f"# {self.name}: the run failed (exit {rc}) on a healthy slice: not retrying")
        return rc
      restarts += 1
      if restarts > max_restarts:
        self.shell.echo(f"# {self.name}: lost {restarts} times; giving up")
        return rc
      self.shell.echo(f"# {self.name}: run exit {rc}, slice {state or 'missing'}: restart {restarts}/{max_restarts}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """Command-line flags; everything after `--` is the job's command (run, babysit)."""
  argv = list(argv)
  command = argv[argv.index("--") + 1:] if "--" in argv else []
  argv = argv[:argv.index("--")] if "--" in argv else argv
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="tpu_vm.py")
  p.add_argument("--name", required=True, help="TPU VM (and queued resource) name")
  p.add_argument("--zone", required=True, help="e.g. us-central2-b (v4), us-west4-a (v5e), us-east5-a (v5p)")
  p.add_argument("--accelerator", required=True, help="v4-8, v4-32, v5litepod-16, v5p-8, v6e-8, ...")
  p.add_argument("--project", default=None, help="GCP project (default: gcloud's configured project)")
  p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  sub = p.add_subparsers(dest="cmd", required=True)
  create = sub.add_parser("create")
  babysit = sub.add_parser("babysit")
  for q in (create, babysit):
    q.add_argument("--spot", action="store_true", help="spot VMs (preemptible; babysit recreates them)")
    q.add_argument("--queued", action="store_true", help="request through a queued resource")
  create.add_argument("--runtime", default=None, help="TPU software version (default: the generation's)")
  setup = sub.add_parser("setup")
  for q in (setup, babysit):
    q.add_argument("--repo", default=None, help="git URL to clone on the workers (default: copy the working tree)")
    q.add_argument("--ref", default="main", help="branch, tag or commit of --repo")
    q.add_argument("--shared", action="append", default=[],
                   help="local folder to copy to ~/shared/ on every worker (repeatable: ../shared/data, ...)")
  run = sub.add_parser("run")
  for q in (run, babysit):
    q.add_argument("--logs", default=os.path.join(REPO, "runs", "tpu_logs"), help="local folder for worker logs")
    q.add_argument("--run-id", default=time.strftime("%Y%m%d-%H%M%S"), help="log subfolder (default: the time)")
  babysit.add_argument("--max-restarts", type=int, default=20)
  babysit.add_argument("--poll-s", type=float, default=60.0)
  babysit.add_argument("--ready-timeout-s", type=float, default=6 * 3600.0)
  fetch = sub.add_parser("fetch")
  fetch.add_argument("--remote", required=True, help="path relative to the repo on worker 0, e.g. runs/tsp")
  fetch.add_argument("--local", default=".", help="local destination folder")
  for name in ("status", "delete"):
    sub.add_parser(name).add_argument("--queued", action="store_true", help="the slice is a queued resource")
  args = p.parse_args(argv)
  args.command = command
  return args


def main(argv: Sequence[str] | None = None, out=None) -> int:
  """Parses flags and runs one subcommand; returns the exit status."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  vm = TpuVm(args.name, args.zone, args.accelerator, args.project, Shell(args.dry_run, out))
  if args.cmd == "create":
    return vm.create(args.spot, args.queued, args.runtime)
  if args.cmd == "setup":
    return vm.setup(args.repo, args.ref, args.shared)
  if args.cmd == "run":
    return vm.run(args.command, args.logs, args.run_id)
  if args.cmd == "fetch":
    return vm.fetch(args.remote, args.local)
  if args.cmd == "status":
    return vm.status(args.queued)
  if args.cmd == "delete":
    return vm.delete(args.queued)
  return vm.babysit(args.command, args.logs, args.run_id, args.spot, args.queued, args.max_restarts, args.poll_s,
                    args.ready_timeout_s, args.repo, args.ref, args.shared)


if __name__ == "__main__":
  sys.exit(main())
