r"""Evaluation CLI: SPR@1, secure-pass@1, func pass@1, per-CWE counts, seen vs unseen CWEs, HumanEval pass@1.

    python -m tsp_jax.evaluate [--config=configs/tsp.py:tiny] --checkpoint=runs/tsp[/export] --split=test \
        [--eval_dir=../shared/eval] [--benchmarks=cweval,codeguardplus,humaneval] [--limit=N] \
        [--decoding=greedy|sample] [--probe_nodes=N] [--out=FILE.json]
    python -m tsp_jax.evaluate --checkpoint=... --benchmarks=securityeval --securityeval_path=PATH/dataset.jsonl
    python -m tsp_jax.evaluate --reference=secure|vulnerable|solution [...]   # dataset programs, no model
    python -m tsp_jax.evaluate --benchmarks=cweval --languages=c,cpp,go,javascript,python [...]  # per language
    python -m tsp_jax.evaluate --compare run1.json run2.json ...              # one table, one plot

One completion per prompt (or the dataset's reference programs), every program labelled by the verifier pool;
writes the results JSON with a per-CWE plot beside it and prints the run's table. The harness is the package
`tsp_jax.evaluation` (metrics defined in `evaluation/metrics.py`); `--config` (the trainer's config) supplies
the defaults of --dtype, --num_workers, --data_dir and --languages. `--eval_dir` / `--data_dir` may name several
folders, comma-separated (default: ../shared/{eval,data} and ../shared/xlang/{eval,data} where present); the
records of `--languages` are read (python by default). A test record that does not say whether its CWE was seen
in training is seen when its CWE occurs in `--data_dir`'s train or dev records.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tsp_jax import config, data, evaluation
from tsp_jax.verify.program import LANGUAGES


def default_dirs(name: str) -> str:
  """`../shared/<name>` and `../shared/xlang/<name>`, those that exist, comma-separated."""
  return ",".join(d for d in (config.shared_dir(name), config.shared_dir(f"xlang/{name}")) if d)


def _cli_main() -> None:
  """Defines the flags here, not at import, so modules importing this one keep their own flag names."""
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

  config_flags.DEFINE_config_file("config", None, "Trainer config file[:variant] (defaults of --dtype, "
                                  "--num_workers, --data_dir).", lock_config=True)
  flags.DEFINE_string("checkpoint", None, "HF folder exported by the trainer (config.json, safetensors, "
                      "tokenizer.model), or the trainer's workdir holding it in export/.")
  flags.DEFINE_string("eval_dir", default_dirs("eval"), "Folder(s), comma-separated, with cweval/ and "
                      "codeguardplus/.")
  flags.DEFINE_list("languages", ["python"], f"Languages of the records evaluated (some of {list(LANGUAGES)}; "
                    "default: --config's languages, else python).")
  flags.DEFINE_string("split", "test", "Eval split (file <eval_dir>/<benchmark>/<split>.jsonl).")
  flags.DEFINE_list("benchmarks", list(evaluation.BENCHMARKS), "Benchmarks to run (also: synth, the generated "
                    "tasks of `python -m tsp_jax.synth` in <eval_dir>/synth/; securityeval, with "
                    "--securityeval_path).")
  flags.DEFINE_string("securityeval_path", None, "Your copy of SecurityEval's dataset.jsonl (s2e-lab/SecurityEval "
                      "on GitHub; not shipped, never downloaded): the prompts of --benchmarks=securityeval.")
  flags.DEFINE_integer("limit", 0, "First N tasks of each benchmark (0: all).")
  flags.DEFINE_enum("reference", None, list(evaluation.REFERENCE_KINDS),
                    "Verify the dataset's reference programs (no model).")
  flags.DEFINE_enum("decoding", "greedy", ["greedy", "sample"], "greedy, or sample (T 0.2, top-p 0.9).")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_integer("max_new_tokens", 256, "Tokens generated per prompt.")
  flags.DEFINE_integer("batch_size", 16, "Prompts decoded at once.")
  flags.DEFINE_string("dtype", "float32", "Parameter and activation dtype (default: --config's model.dtype).")
  flags.DEFINE_integer("num_workers", 2, "Verifier pool workers (default: --config's verify.num_workers).")
  flags.DEFINE_integer("probe_nodes", 0, "Also run the node-level probe on the first N dev-split risk nodes.")
  flags.DEFINE_string("data_dir", default_dirs("data"), "Shared train/dev data, folder(s) comma-separated: the "
                      "probe's nodes and the CWEs seen in training (default: --config's data_dir).")
  flags.DEFINE_string("out", None, "Results JSON (default runs/eval/<run>.json); the plot goes next to it.")
  flags.DEFINE_bool("compare", False, "Compare the results JSON files given as arguments.")
  flags.DEFINE_string("plot", "runs/eval/compare.png", "--compare: the per-CWE plot.")

  def setting(name: str, config_path: str) -> Any:
    """A flag's value; an unset flag takes the value at `config_path` of --config when one is given."""
    fl = flags.FLAGS
    if fl[name].present or fl.config is None:
      return fl[name].value
    value = fl.config
    for key in config_path.split("."):
      value = value[key]
    return value

  def main(argv: Sequence[str]) -> None:
    """--compare FILES..., or one run (--checkpoint or --reference) written, plotted and printed."""
    fl = flags.FLAGS
    from tsp_jax import distributed  # pylint: disable=import-outside-toplevel
    distributed.maybe_initialize()  # multi-host TPU slices only
    if fl.compare:
      results = [evaluation.read_json(p) for p in argv[1:]]
      if not results:
        raise app.UsageError("--compare needs results JSON files as arguments")
      print(evaluation.compare_table(results))
      evaluation.plot_per_cwe(results, fl.plot)
      print(f"\nplot: {fl.plot}")
      return
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if (fl.checkpoint is None) == (fl.reference is None):
      raise app.UsageError("pass exactly one of --checkpoint and --reference")
    if "securityeval" in fl.benchmarks and not fl.securityeval_path:
      raise app.UsageError("--benchmarks=securityeval needs --securityeval_path=PATH/dataset.jsonl (your copy of "
                           "dataset.jsonl from the s2e-lab/SecurityEval repository on GitHub)")
    languages = list(setting("languages", "languages"))
    unknown = sorted(set(languages) - set(LANGUAGES))
    if unknown:
      raise app.UsageError(f"--languages: unknown {unknown}; expected some of {list(LANGUAGES)}")
    data_dir = setting("data_dir", "data_dir") or default_dirs("data")
    seen = data.training_cwes(data_dir) if data_dir else None
    items = evaluation.load_benchmarks(fl.eval_dir, fl.split, fl.benchmarks, fl.limit, fl.securityeval_path,
                                       languages, seen)
    num_workers = setting("num_workers", "verify.num_workers")
    if fl.reference:
      from tsp_jax.verify.pool import VerifierPool  # pylint: disable=import-outside-toplevel
      with VerifierPool(num_workers=num_workers) as pool:
        result = evaluation.evaluate_reference(items, fl.reference, pool)
    else:
      nodes = []
      if fl.probe_nodes:
        dev_files = data.split_files(data_dir, fl.config.dev_split if fl.config else "dev")
        nodes = data.load_nodes(dev_files, languages=languages)[1][:fl.probe_nodes]
      decoding = evaluation.Decoding.named(fl.decoding, seed=fl.seed, max_new_tokens=fl.max_new_tokens,
                                           batch_size=fl.batch_size)
      result = evaluation.evaluate_checkpoint(fl.checkpoint, items, None, decoding,
                                              dtype=setting("dtype", "model.dtype"), probe_nodes=nodes,
                                              num_workers=num_workers)
    out = fl.out or os.path.join("runs", "eval", f"{result['run']}.json")
    evaluation.write_json(result, out)
    plot_path = os.path.splitext(out)[0] + ".png"
    evaluation.plot_per_cwe([result], plot_path)
    print(evaluation.markdown_table(result))
    print(f"\nresults: {out}\nplot: {plot_path}")

  app.run(main)


if __name__ == "__main__":
  _cli_main()
