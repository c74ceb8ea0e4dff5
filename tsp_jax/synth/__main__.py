"""`python -m tsp_jax.synth --out=DIR --seed=S`: writes the generated task splits (see `generate`)."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

from absl import app, flags

from tsp_jax.synth import generate


def _cli_main() -> None:
  """Defines the flags here, not at import."""
  d = generate.Settings()
  out = flags.DEFINE_string("out", None, "Output folder (pretrain/train/dev/test.jsonl).", required=True)
  seed = flags.DEFINE_integer("seed", d.seed, "Generator seed.")
  train = flags.DEFINE_integer("train", d.train, "Training tasks (seen families).")
  dev = flags.DEFINE_integer("dev", d.dev, "Dev tasks (seen families).")
  test = flags.DEFINE_integer("test_per_subset", d.test_per_subset, "Test tasks per subset.")
  pretrain = flags.DEFINE_integer("pretrain", d.pretrain, "Pre-training tasks (every family).")
  vuln_rate = flags.DEFINE_float("vuln_rate", d.vuln_rate, "Share of pre-training solutions that are vulnerable.")
  fresh_names = flags.DEFINE_float("fresh_names", d.fresh_names, "Share of argument / local names drawn fresh.")
  unseen = flags.DEFINE_list("unseen", [], "Families only pre-training sees (default: generate.default_unseen).")

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    s = dataclasses.replace(d, seed=seed.value, train=train.value, dev=dev.value, test_per_subset=test.value,
                            pretrain=pretrain.value, vuln_rate=vuln_rate.value, fresh_names=fresh_names.value,
                            unseen=tuple(unseen.value))
    records = generate.generate(s)
    for split, path in generate.write(records, out.value).items():
      by = collections.Counter(r.get("subset") or r["family"] for r in records[split])
      print(f"{path}: {len(records[split])} tasks ({', '.join(f'{k} {v}' for k, v in sorted(by.items()))})")

  app.run(main)


if __name__ == "__main__":
  _cli_main()
