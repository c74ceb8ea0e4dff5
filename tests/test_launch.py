"""The Cloud TPU launcher offline: exact gcloud command lines (--dry-run) on two slice types, the packed working
tree, and babysit's recreate-on-preemption loop against a scripted gcloud."""

import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import tempfile

import pytest

from tsp_jax import plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("tpu_vm", os.path.join(REPO, "launch", "tpu_vm.py"))
tpu_vm = importlib.util.module_from_spec(_spec)
sys.modules["tpu_vm"] = tpu_vm  # dataclasses look their module up
_spec.loader.exec_module(tpu_vm)

ARCHIVE = os.path.join(tempfile.gettempdir(), "tsp_jax-tsp.tar.gz")
INSTALL = ("cd ~/tsp_jax && python3 -m pip install -q --user uv && ~/.local/bin/uv venv -q --python 3.11 .venv && "
           "~/.local/bin/uv pip install -q --python .venv/bin/python -r requirements.txt \"jax[tpu]==0.10.2\" gcsfs")
TRAIN = ["python", "-m", "tsp_jax.train", "--config=configs/tpu.py:v4_32", "--workdir=gs://bucket/tsp"]


def dry(*args: str) -> list[str]:
  """The lines `tpu_vm.py --dry-run` prints for args."""
  out = io.StringIO()
  assert tpu_vm.main(["--dry-run", *args], out=out) == 0
  return out.getvalue().splitlines()


V4 = ["--name=tsp", "--zone=us-central2-b", "--accelerator=v4-32", "--project=my-proj"]
V5E = ["--name=tsp", "--zone=us-west4-a", "--accelerator=v5litepod-16"]


def test_create():
  assert dry(*V4, "create") == [
      "+ gcloud compute tpus tpu-vm create tsp --accelerator-type=v4-32 --version=tpu-ubuntu2204-base "
      "--zone=us-central2-b --project=my-proj"]
  assert dry(*V5E, "create", "--spot") == [
      "+ gcloud compute tpus tpu-vm create tsp --accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite "
      "--zone=us-west4-a --spot"]
  assert dry(*V5E, "create", "--queued", "--spot") == [
      "+ gcloud compute tpus queued-resources create tsp --node-id=tsp --accelerator-type=v5litepod-16 "
      "--runtime-version=v2-alpha-tpuv5-lite --zone=us-west4-a --spot"]
  assert dry("--name=x", "--zone=us-east5-a", "--accelerator=v5p-8", "create", "--runtime=v2-alpha-tpuv5-x") == [
      "+ gcloud compute tpus tpu-vm create x --accelerator-type=v5p-8 --version=v2-alpha-tpuv5-x --zone=us-east5-a"]


def test_setup_copies_the_working_tree_or_clones():
  assert dry(*V4, "setup") == [
      f"# pack {REPO} (git ls-files -co --exclude-standard) -> {ARCHIVE}",
      f"+ gcloud compute tpus tpu-vm scp {ARCHIVE} tsp:tsp_jax.tar.gz --worker=all --zone=us-central2-b "
      "--project=my-proj",
      "+ gcloud compute tpus tpu-vm ssh tsp --worker=all '--command=set -euo pipefail; rm -rf ~/tsp_jax && "
      f"mkdir -p ~/tsp_jax && tar -xzf ~/tsp_jax.tar.gz -C ~/tsp_jax && {INSTALL} && mkdir -p ~/shared' "
      "--zone=us-central2-b --project=my-proj"]
  assert dry(*V5E, "setup", "--repo=https://github.com/me/tsp_jax.git", "--ref=v1", "--shared=../shared/data/",
             "--shared=/d/eval") == [
      "+ gcloud compute tpus tpu-vm ssh tsp --worker=all '--command=set -euo pipefail; rm -rf ~/tsp_jax && "
      "git clone -q https://github.com/me/tsp_jax.git ~/tsp_jax && git -C ~/tsp_jax checkout -q v1 && "
      f"{INSTALL} && mkdir -p ~/shared' --zone=us-west4-a",
      "+ gcloud compute tpus tpu-vm scp --recurse ../shared/data tsp:shared/ --worker=all --zone=us-west4-a",
      "+ gcloud compute tpus tpu-vm scp --recurse /d/eval tsp:shared/ --worker=all --zone=us-west4-a"]


def test_run_on_all_workers_with_logs_per_worker():
  assert dry(*V4, "run", "--logs=/tmp/logs", "--run-id=r1", "--", *TRAIN) == [
      "+ gcloud compute tpus tpu-vm ssh tsp --worker=all '--command=cd ~/tsp_jax && . .venv/bin/activate && "
      "TSP_DISTRIBUTED=1 python -m tsp_jax.train --config=configs/tpu.py:v4_32 --workdir=gs://bucket/tsp' "
      "--output-directory=/tmp/logs/tsp/r1 --zone=us-central2-b --project=my-proj"]
  # A single-host slice runs without jax.distributed.
  assert dry("--name=tsp", "--zone=us-east5-a", "--accelerator=v5p-8", "run", "--logs=L", "--run-id=a", "--",
             "python", "-m", "tsp_jax.train", "--config=configs/tpu.py:v5p_8") == [
      "+ gcloud compute tpus tpu-vm ssh tsp --worker=all '--command=cd ~/tsp_jax && . .venv/bin/activate && "
      "python -m tsp_jax.train --config=configs/tpu.py:v5p_8' --output-directory=L/tsp/a --zone=us-east5-a"]
  with pytest.raises(ValueError, match="needs a command"):
    dry(*V4, "run")


def test_status_delete_fetch():
  assert dry(*V4, "delete") == [
      "+ gcloud compute tpus tpu-vm delete tsp --quiet --zone=us-central2-b --project=my-proj"]
  assert dry(*V5E, "delete", "--queued") == [
      "+ gcloud compute tpus queued-resources delete tsp --force --quiet --zone=us-west4-a"]
  assert dry(*V5E, "status") == [
      "+ gcloud compute tpus tpu-vm describe tsp '--format=value(state,acceleratorType,health)' --zone=us-west4-a"]
  assert dry(*V5E, "fetch", "--remote=runs/tsp", "--local=out") == [
      "+ gcloud compute tpus tpu-vm scp --recurse tsp:tsp_jax/runs/tsp out --worker=0 --zone=us-west4-a"]


def test_shell_wrapper_and_help():
  out = subprocess.run(["bash", os.path.join(REPO, "launch", "tpu_vm.sh"), *V4, "--dry-run", "delete"],
                       capture_output=True, text=True, check=True).stdout
  assert out.startswith("+ gcloud compute tpus tpu-vm delete tsp --quiet")
  assert "babysit" in subprocess.run([sys.executable, os.path.join(REPO, "launch", "tpu_vm.py"), "--help"],
                                     capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name, chips, hosts", [
    ("v4-8", 4, 1), ("v4-32", 16, 4), ("v5litepod-8", 8, 1), ("v5litepod-16", 16, 4), ("v5p-8", 4, 1),
    ("v5p-16", 8, 2), ("v6e-16", 16, 4)])
def test_accelerator_types(name, chips, hosts):
  acc = tpu_vm.Accelerator.parse(name)
  assert (acc.chips, acc.hosts) == (chips, hosts)
  assert plan.parse_accelerator(name)[1] == chips  # the plan and the launcher agree on the slice


def test_bad_accelerator():
  with pytest.raises(ValueError, match="unknown accelerator"):
    tpu_vm.Accelerator.parse("v3-8")
  with pytest.raises(ValueError, match="TensorCores"):
    tpu_vm.Accelerator.parse("v4-9")


def test_pack_takes_tracked_and_untracked_but_not_ignored(tmp_path):
  repo = tmp_path / "repo"
  (repo / "pkg").mkdir(parents=True)
  (repo / "pkg" / "a.py").write_text("a = 1\n")
  (repo / ".gitignore").write_text(".venv/\n")
  (repo / ".venv").mkdir()
  (repo / ".venv" / "big").write_text("x")
  git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)
  git("init", "-q")
  git("add", "pkg/a.py", ".gitignore")
  (repo / "new.py").write_text("b = 2\n")  # untracked, not ignored: travels too
  archive = tmp_path / "code.tar.gz"
  assert tpu_vm.pack(str(repo), str(archive)) == 3
  with tarfile.open(archive) as tar:
    assert sorted(tar.getnames()) == [".gitignore", "new.py", "pkg/a.py"]


class ScriptedShell(tpu_vm.Shell):
  """Records commands; `describe` answers from a list of states, `ssh ... run` from a list of exit codes."""

  def __init__(self, states: list[str], run_codes: list[int]):
    super().__init__(dry_run=False, out=io.StringIO())
    self.states, self.run_codes, self.log = list(states), list(run_codes), []

  def call(self, cmd):
    verb = cmd[4]
    is_run = verb == "ssh" and any(a.startswith("--output-directory") for a in cmd)
    self.log.append("run" if is_run else verb if cmd[3] == "tpu-vm" else f"queued-{verb}")
    return self.run_codes.pop(0) if is_run else 0

  def capture(self, cmd):
    state = self.states.pop(0)
    return (0, state) if state else (1, "")


def babysit(shell: ScriptedShell) -> int:
  vm = tpu_vm.TpuVm("tsp", "us-central2-b", "v4-32", None, shell)
  return vm.babysit(TRAIN, "/tmp/logs", "r", spot=True, queued=False, max_restarts=3, poll_s=0,
                    ready_timeout_s=10, repo_url="https://x/tsp.git")


def test_babysit_recreates_after_preemption():
  # missing -> create, wait (CREATING, READY), setup, run fails; PREEMPTED -> delete, create, READY, setup, run ok.
  shell = ScriptedShell(states=["", "CREATING", "READY", "PREEMPTED", "PREEMPTED", "READY"], run_codes=[255, 0])
  assert babysit(shell) == 0
  assert shell.log == ["create", "ssh", "run", "delete", "create", "ssh", "run"]


def test_babysit_stops_on_a_failure_of_a_healthy_slice():
  shell = ScriptedShell(states=["READY", "READY"], run_codes=[1])
  assert babysit(shell) == 1
  assert shell.log == ["run"]


def test_babysit_gives_up_after_max_restarts():
  shell = ScriptedShell(states=["READY"] + ["PREEMPTED", "PREEMPTED", "READY"] * 4, run_codes=[255] * 4)
  assert babysit(shell) == 255
  assert shell.log.count("run") == 4 and shell.log.count("create") == 3


def _requirements(name: str) -> dict[str, str]:
  with open(os.path.join(REPO, name), encoding="utf-8") as f:
    return dict(line.split("#")[0].strip().split("==") for line in f if "==" in line.split("#")[0])


def test_install_sets_per_platform():
  """Runtime (every platform, what TPU workers install) vs tests + the torch reference (laptops, CI)."""
  runtime, test = _requirements("requirements.txt"), _requirements("requirements-test.txt")
  assert {"torch", "transformers", "pytest-xdist", "chex"} <= set(test) and not set(test) & set(runtime)
  assert {"jax", "jaxlib", "flax", "bandit", "semgrep", "pytest", "pytest-timeout"} <= set(runtime)
  with open(os.path.join(REPO, "requirements-test.txt"), encoding="utf-8") as f:
    assert "-r requirements.txt\n" in f.read()
  assert "-r requirements.txt " in INSTALL and "requirements-test" not in INSTALL  # TPU workers: no torch
  assert tpu_vm.jax_version(os.path.join(REPO, "requirements.txt")) == runtime["jax"]


def test_local_setup_options(tmp_path):
  """`bash launch/local.sh setup [--gpu] [--runtime]` against a fake venv python and npm (which log their calls)."""
  log, venv, bin_dir = tmp_path / "log", tmp_path / "venv", tmp_path / "bin"
  for path in (venv / "bin" / "python", bin_dir / "npm"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{path.name} $*" >> {log}\n')
    path.chmod(0o755)
  env = {**os.environ, "TSP_VENV": str(venv), "PATH": f"{bin_dir}:{os.environ['PATH']}"}

  def setup(*args: str) -> tuple[int, list[str]]:
    log.write_text("")
    rc = subprocess.run(["bash", os.path.join(REPO, "launch", "local.sh"), "setup", *args], env=env,
                        capture_output=True, text=True, timeout=60).returncode
    return rc, [line for line in log.read_text().splitlines() if line.startswith("python")]

  pip = "python -m pip install -q --disable-pip-version-check"
  jax = _requirements("requirements.txt")["jax"]
  assert setup() == (0, [f"{pip} -r requirements-test.txt"])
  assert setup("--gpu") == (0, [f"{pip} -r requirements-test.txt jax[cuda12]=={jax}"])
  assert setup("--runtime") == (0, [f"{pip} -r requirements.txt"])
  assert setup("--runtime", "--gpu") == (0, [f"{pip} -r requirements.txt jax[cuda12]=={jax}"])
  assert setup("--tpu")[0] == 2
