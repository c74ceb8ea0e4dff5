"""The node-level probe: batched mean log-probs against a plain forward, and its figures on fixture nodes."""

import jax.numpy as jnp
import numpy as np
import pytest

from tests.evaluation.helpers import FIXTURE
from tsp_jax import data, objective
from tsp_jax.evaluation import decoding, probe
from tsp_jax.model import llama


def test_node_probe(tiny_checkpoint, pool):
  cfg, params, tok = decoding.load_model(tiny_checkpoint)
  _, nodes = data.load_nodes([FIXTURE])
  nodes = nodes[:6]
  # The jitted, batched mean log-prob equals a plain forward over one sequence.
  fixed, vuln, start = probe.probe_pair(tok, nodes[0], 128)
  assert len(fixed) <= 128 and fixed[0] == tok.bos_id
  logits, _ = llama.forward(params, cfg, jnp.asarray(fixed[None]), jnp.arange(len(fixed))[None])
  expect = float(np.mean(np.asarray(objective.token_logps(logits, jnp.asarray(fixed[None])))[0, start:]))
  got = probe.mean_logps(params, cfg, [vuln, fixed], [start, start], 128, 4, tok.pad_id)
  assert got[1] == pytest.approx(expect, abs=1e-5)
  out = probe.node_probe(params, cfg, tok, nodes, pool, decoding.Decoding.named("sample", max_new_tokens=16),
                         max_len=256)
  assert out["nodes"] == 6 and out["scored"] + out["skipped_boundary"] == 6 and out["samples"] == 6
  assert 0.0 <= out["preference_accuracy"] <= 1.0 and 0.0 <= out["parse_rate"] <= 1.0
