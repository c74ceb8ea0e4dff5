"""CodeLlama-7B trainer configs for Cloud TPU slices: `--config=configs/tpu.py:v4_32` (also `v5e_16`, `v5p_8`;
`:v4_32,sft` or `,selfplay` for the baselines; default mode `tsp`).

The paper's settings (configs/base.py `codellama_7b`: lr 2e-5, 4 epochs, K = 4, 3 rounds, global batch 16 pairs)
with the mesh and micro-batch of each slice: FSDP over every chip (`mesh_shape` (1, -1, 1)), one micro-batch
that shards evenly over the chips (`batch_size` = chips x pairs per chip) and gradient accumulation up to 16 pairs
per optimizer update; the tree search samples `prefixes_per_batch` x 4 slots, also a multiple of the chip count.
Training rematerialises each decoder block's activations (`LlamaConfig.remat`), without which the step does not fit.
`accelerator` names the slice type (`python -m tsp_jax.plan` reads it; `launch/tpu_vm.py --accelerator` creates it).
Needs `--config.init_checkpoint=/path/to/CodeLlama-7b-Instruct-hf` and a `--workdir` (gs:// on multi-host slices).
"""

import ml_collections

from configs import base

# variant -> (TPU slice type, chips, pairs per chip per micro-batch, prefixes per search batch)
SLICES = {
    "v4_32": ("v4-32", 16, 1, 64),
    "v5e_16": ("v5litepod-16", 16, 1, 32),
    "v5p_8": ("v5p-8", 4, 4, 64),
}
VARIANTS = tuple(SLICES)
GLOBAL_BATCH = 16  # pairs per optimizer update (the paper)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The 7B config of a slice variant (`v4_32`, `v5e_16`, `v5p_8`), optionally `,<mode>` (tsp, sft, selfplay)."""
  variant, _, mode = (arg or "v4_32").partition(",")
  if variant not in SLICES:
    raise ValueError(f"unknown TPU variant {variant!r}; expected one of {VARIANTS}")
  tpu, chips, per_chip, prefixes = SLICES[variant]
  c = base.base_config(mode or "tsp", "codellama_7b")
  c.variant = variant
  c.accelerator = tpu
  c.mesh_shape = (1, -1, 1)
  c.batch_size = chips * per_chip
  c.optim.grad_accum = max(1, GLOBAL_BATCH // c.batch_size)
  c.search.prefixes_per_batch = prefixes
  c.model.overrides.remat = True  # per-layer activation remat: without it the 7B step exceeds HBM (tsp_jax.plan)
  return c
