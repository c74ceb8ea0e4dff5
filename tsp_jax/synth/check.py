"""The reference check: every secure body passes its functional and security judges and the CWE-aware static
composite, every vulnerable body passes its functional tests and fails its security judge (the executable security tests, or the CWE-aware static
composite where the task says `security_judge: static`).

    python -m tsp_jax.synth.check [--per_template=3 --seed=0 --workers=2]
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Sequence

from tsp_jax.synth import core, generate
from tsp_jax.synth.families import FAMILIES
from tsp_jax.verify import types


def task_of(inst: core.Instance) -> types.Task:
  """The verifier Task of an instance (as the loaders build it from its record)."""
  return types.task_from_record(generate.record(inst, "check", 0, True, random.Random(0)))


def check(instances: Sequence[core.Instance], pool) -> list[str]:
  """Every reference of every instance through `pool`; one line per wrong verdict (empty: all right)."""
  jobs = [(inst, kind, b) for inst in instances for kind, bodies in (("secure", inst.secure),
                                                                     ("vulnerable", inst.vulnerable)) for b in bodies]
  verdicts = pool.verify([task_of(inst) for inst, _, _ in jobs], [inst.program(b) for inst, _, b in jobs])
  wrong = []
  for (inst, kind, b), v in zip(jobs, verdicts):
    expected_secure = kind == "secure"
    statically_flagged = expected_secure and v.static_secure is False  # a secure reference no analyzer flags
    if v.status != types.OK or v.functional is not True or v.secure != expected_secure or statically_flagged:
      which = (inst.secure if expected_secure else inst.vulnerable).index(b)
      wrong.append(f"{inst.family}/{inst.template} {kind} body {which}: status={v.status} functional="
                   f"{v.functional} secure={v.secure} (expected {expected_secure}) static_secure={v.static_secure} "
                   f"{[f.test_id for f in v.findings]} {v.detail[-300:]}")
  return wrong


def sample(per_template: int, seed: int, families: Sequence[core.Family] = FAMILIES) -> list[core.Instance]:
  """`per_template` instances of every template of `families`."""
  rng = random.Random(seed)
  return [t(rng) for f in families for t in f.templates for _ in range(per_template)]


def _cli_main() -> None:
  """Defines the flags here, not at import."""
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  per_template = flags.DEFINE_integer("per_template", 3, "Instances checked per template.")
  seed = flags.DEFINE_integer("seed", 0, "Sampling seed.")
  workers = flags.DEFINE_integer("workers", 2, "Verifier pool workers.")
  only = flags.DEFINE_list("families", [], "Only these families (default: all).")
  modules = flags.DEFINE_list("modules", [], "Check the FAMILY of these modules instead (e.g. a family being "
                              "written: tsp_jax.synth.families.xss).")

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    from tsp_jax.verify import VerifierPool  # pylint: disable=import-outside-toplevel
    fams = [f for f in FAMILIES if not only.value or f.name in only.value]
    if modules.value:
      fams = [importlib.import_module(m).FAMILY for m in modules.value]
    insts = sample(per_template.value, seed.value, fams)
    with VerifierPool(num_workers=workers.value) as pool:
      wrong = check(insts, pool)
    n = sum(len(i.secure) + len(i.vulnerable) for i in insts)
    print("\n".join(wrong))
    print(f"{n - len(wrong)} passed, {len(wrong)} failed")
    if wrong:
      raise SystemExit(1)

  app.run(main)


if __name__ == "__main__":
  _cli_main()
