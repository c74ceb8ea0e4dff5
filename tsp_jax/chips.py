"""Published figures of the accelerators the plan and the benchmarks know (no jax, no configs: importable on any
machine, the device check's included)."""

from __future__ import annotations

import dataclasses

GiB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures of a TPU generation or a GPU (bf16 dense peak; ICI: the per-chip Gbps figure / 8
  on TPUs, NVLink's bandwidth per direction on GPUs)."""
  name: str
  hbm_bytes: float
  peak_flops: float
  hbm_bw: float  # bytes/s
  ici_bw: float  # bytes/s
  device_kinds: tuple[str, ...] = ()  # substrings of `jax.Device.device_kind` that name this chip


CHIPS = {
    "v4": Chip("v4", 32 * GiB, 275e12, 1200e9, 2400e9 / 8, ("TPU v4",)),
    "v5litepod": Chip("v5e", 16e9, 197e12, 819e9, 1600e9 / 8, ("TPU v5 lite", "TPU v5e")),
    "v5p": Chip("v5p", 95e9, 459e12, 2765e9, 4800e9 / 8, ("TPU v5p",)),
    "v6e": Chip("v6e", 32e9, 918e12, 1640e9, 3584e9 / 8, ("TPU v6",)),
    # NVIDIA data sheets (SXM boards; bf16 Tensor Core peak without sparsity, i.e. half the sheet's sparse figure;
    # NVLink: the sheet's bidirectional GB/s / 2). H100: "NVIDIA H100 Tensor Core GPU" data sheet (80 GB HBM3,
    # 3.35 TB/s, bf16 1,979 TFLOPS sparse, NVLink 900 GB/s); H200: "NVIDIA H200 Tensor Core GPU" data sheet
    # (141 GB HBM3e, 4.8 TB/s, bf16 1,979 TFLOPS sparse, NVLink 900 GB/s); A100: "NVIDIA A100 Tensor Core GPU"
    # data sheet (80 GB HBM2e, 2,039 GB/s, bf16 624 TFLOPS sparse, NVLink 600 GB/s).
    "h100": Chip("H100 SXM 80GB", 80e9, 989e12, 3.35e12, 900e9 / 2, ("H100",)),
    "h200": Chip("H200 SXM 141GB", 141e9, 989e12, 4.8e12, 900e9 / 2, ("H200",)),
    "a100": Chip("A100 SXM 80GB", 80e9, 312e12, 2.039e12, 600e9 / 2, ("A100",)),
}
GPUS = ("h100", "h200", "a100")


def for_device_kind(device_kind: str) -> Chip | None:
  """The chip a `jax.Device.device_kind` (e.g. "NVIDIA H200", "TPU v5 lite") names; None when unknown (CPU)."""
  return next((c for c in CHIPS.values() if any(k in device_kind for k in c.device_kinds)), None)
