"""Multi-host JAX on one machine: 2 processes x 4 CPU devices run one sharded TSP train step whose loss and
updated parameters equal the single-process (one device) run; and the multi-host detection rules."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests import distributed_worker
from tsp_jax import distributed

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_worker.py")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_single_process(tmp_path):
  port = free_port()
  procs, logs = [], []
  for i in range(2):
    # 4 fake CPU devices per process; LLVM -O0 halves the workers' compile time on a loaded 2-core machine.
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0",
           "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
           "JAX_PROCESS_ID": str(i)}
    env.pop("TSP_DISTRIBUTED", None)
    logs.append((tmp_path / f"{i}.out", tmp_path / f"{i}.err"))  # files, not pipes: nothing blocks a worker
    with open(logs[i][0], "w") as out, open(logs[i][1], "w") as err:
      procs.append(subprocess.Popen([sys.executable, WORKER], env=env, stdout=out, stderr=err))
  single = distributed_worker.one_step(local_rows=False, mesh_shape=(1, 1, 1))  # this process, one device, meanwhile
  results = []
  try:
    for p, (out, err) in zip(procs, logs):
      assert p.wait(timeout=180) == 0, err.read_text()[-4000:]
      results.append(json.loads(out.read_text().strip().splitlines()[-1]))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [r["process"] for r in results] == [0, 1]
  assert [r["primary"] for r in results] == [True, False]
  assert all(r["multihost"] and r["processes"] == 2 and r["devices"] == 8 and r["local_devices"] == 4
             for r in results)
  assert [r["max_over_processes"] for r in results] == [2, 2]
  assert [r["share"] for r in results] == [[0, 2, 4], [1, 3]]
  assert all(r["gathered"] == [0, 10, 20, 30, 40] for r in results)
  assert jax.process_count() == 1
  for r in results:
    assert r["loss"] == pytest.approx(single["loss"], abs=1e-5)
    assert r["param_sq_norm"] == pytest.approx(single["param_sq_norm"], rel=1e-5)
    assert r["embed_shape"] == single["embed_shape"]  # gathered whole across processes
    assert r["embed_sum"] == pytest.approx(single["embed_sum"], rel=1e-5, abs=1e-5)
  assert abs(single["loss"] - 0.6931) > 1e-2  # an informative loss (the reference differs from the policy)


@pytest.mark.parametrize("env, expected", [
    ({}, False),
    ({"TSP_DISTRIBUTED": "1"}, True),
    ({"TSP_DISTRIBUTED": "0", "JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234"}, False),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234"}, True),
    ({"TPU_WORKER_HOSTNAMES": "t1v-n-0"}, False),
    ({"TPU_WORKER_HOSTNAMES": "t1v-n-0,t1v-n-1,t1v-n-2,t1v-n-3"}, True),
    ({"TPU_PROCESS_ADDRESSES": "10.0.0.2:8476,10.0.0.3:8476"}, True),
    ({"MEGASCALE_NUM_SLICES": "2"}, True),
    ({"MEGASCALE_NUM_SLICES": "1"}, False),
])
def test_multihost_detection(env, expected):
  assert distributed.multihost_requested(env) is expected


def test_single_host_does_not_initialize():
  assert distributed.maybe_initialize({}) is False
  assert distributed.is_primary()
  with pytest.raises(ValueError, match="TSP_DISTRIBUTED"):
    distributed.multihost_requested({"TSP_DISTRIBUTED": "yes"})
  # One process: the helpers are the identity.
  assert list(distributed.process_share(3)) == [0, 1, 2] and distributed.max_over_processes(7) == 7
  assert distributed.gather_shares(np.arange(3), 3).tolist() == [0, 1, 2]
  distributed.sync("single")
