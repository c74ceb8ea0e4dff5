"""CodeLlama-7B trainer configs for NVIDIA GPUs of one host: `--config=configs/gpu.py:h100_1` (also `a100_1`,
`h200_1`, `h100_8`, `h200_8`; `:h100_1,sft` or `,selfplay` for the baselines; default mode `tsp`).

The paper's settings (configs/base.py `codellama_7b`: lr 2e-5, 4 epochs, K = 4, 3 rounds, global batch 16 pairs)
with bf16 compute, fp32 weights, per-layer remat and cuDNN's fused attention (`model.kernel = "auto"` picks
"cudnn" on a GPU backend), the mesh over the host's GPUs (FSDP over all of them, `mesh_shape` (1, -1, 1), as on
TPU slices), one micro-batch of `gpus` x pairs per GPU and gradient accumulation up to 16 pairs per update.
- One GPU (`*_1`): full fine-tuning keeps fp32 params and gradients (2 x 25 GiB) on one device. AdamW's two fp32
  moments (50 GiB more) do not fit 80 GB, nor does `optax.MultiSteps`' fp32 gradient accumulator (25 GiB), so
  these variants run Adafactor (factored second moments, no first moment: `optim.optimizer = "adafactor"`,
  < 0.1 GiB) on all 16 pairs of an update in one packed micro-batch (no accumulation), and the tree search samples
  32 prefixes x 4 slots at a time (64 on an H200). `python -m tsp_jax.plan --gpu` prints the memory.
- Eight GPUs (`*_8`): AdamW as on TPUs, the state split 8 ways.
`accelerator` names the GPU type and count (`python -m tsp_jax.plan` reads it). JAX preallocates 75% of a GPU's
memory by default: run with `XLA_PYTHON_CLIENT_MEM_FRACTION=0.9` (what the plan allows). Needs
`--config.init_checkpoint=/path/to/CodeLlama-7b-Instruct-hf` and a `--workdir`.
"""

import ml_collections

from configs import base

# variant -> (accelerator, GPUs, pairs per GPU per micro-batch, prefixes per search batch, optimizer)
VARIANTS_TABLE = {
    "h100_1": ("h100-1", 1, 16, 32, "adafactor"),
    "a100_1": ("a100-1", 1, 16, 32, "adafactor"),
    "h200_1": ("h200-1", 1, 16, 64, "adafactor"),
    "h100_8": ("h100-8", 8, 2, 64, "adamw"),
    "h200_8": ("h200-8", 8, 2, 64, "adamw"),
}
VARIANTS = tuple(VARIANTS_TABLE)
GLOBAL_BATCH = 16  # pairs per optimizer update (the paper)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The 7B config of a GPU variant (`h100_1`, ...), optionally `,<mode>` (tsp, sft, selfplay)."""
  variant, _, mode = (arg or "h100_1").partition(",")
  if variant not in VARIANTS_TABLE:
    raise ValueError(f"unknown GPU variant {variant!r}; expected one of {VARIANTS}")
  accelerator, gpus, per_gpu, prefixes, optimizer = VARIANTS_TABLE[variant]
  c = base.base_config(mode or "tsp", "codellama_7b")
  c.variant = variant
  c.accelerator = accelerator
  c.mesh_shape = (1, -1, 1)
  c.batch_size = gpus * per_gpu
  c.optim.grad_accum = max(1, GLOBAL_BATCH // c.batch_size)
  c.optim.optimizer = optimizer
  c.search.prefixes_per_batch = prefixes
  c.model.overrides.remat = True  # per-layer activation remat: without it the 7B step exceeds HBM (tsp_jax.plan)
  return c
