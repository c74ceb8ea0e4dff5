"""Data by language: the `languages` filter, several data folders, prompts without a prompt field, node
programs in C, and a tokenizer over every language of its corpus."""

import json
import os

import ml_collections
import pytest

from tsp_jax import config as config_lib
from tsp_jax import data
from tsp_jax import tokenizer as tokenizer_lib
from tsp_jax.verify import program

C_FIXED = "int get(int *a, int n, int i)\n{\n    if (i < 0 || i >= n)\n        return -1;\n    return a[i];\n}\n"
C_VULN = "int get(int *a, int n, int i)\n{\n    return a[i];\n}\n"
JS_FIXED = "function greet(res, name) {\n  res.send(`<p>${escape(name)}</p>`);\n}\n"
JS_VULN = "function greet(res, name) {\n  res.send(`<p>${name}</p>`);\n}\n"


def _write(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def mixed(tmp_path):
  """A user's data folder with Python and JS records in one file, and a second folder of C (files at its top)."""
  py = {"id": "p/0", "source": "sven", "cwe": "CWE-078", "language": "python", "prompt": "Run it.",
        "reference_secure": "def f(x):\n  run([x])\n", "reference_vulnerable": "def f(x):\n  run(x, shell=True)\n"}
  js = {"id": "j/0", "source": "safecoder-sec-new-desc", "cwe": "CWE-079", "language": "javascript",
        "prompt": "Greet a user.", "reference_secure": JS_FIXED, "reference_vulnerable": JS_VULN}
  c = {"id": "c/0", "source": "sven", "cwe": "CWE-125", "language": "c", "prompt": None,
       "reference_secure": C_FIXED, "reference_vulnerable": C_VULN}
  _write(tmp_path / "mine" / "pairs" / "train.jsonl", [py, js])
  _write(tmp_path / "mine" / "pairs" / "dev.jsonl", [py])
  _write(tmp_path / "xlang" / "train.jsonl", [c])
  _write(tmp_path / "xlang" / "dev.jsonl", [c])
  return f"{tmp_path / 'mine'},{tmp_path / 'xlang'}"


def test_languages_filter_and_several_folders(mixed):
  assert [os.path.basename(os.path.dirname(f)) for f in data.split_files(mixed, "train")] == ["pairs", "xlang"]
  stats = data.LoadStats()
  records = data.read_records(data.split_files(mixed, "train"), stats)  # None: every language
  assert [(r.id, r.language) for r in records] == [("p/0", "python"), ("j/0", "javascript"), ("c/0", "c")]
  stats = data.LoadStats()
  records, nodes = data.load_nodes(data.split_files(mixed, "train"), stats, languages=("c", "cpp"))
  assert [r.id for r in records] == ["c/0"] and stats.other_language == 2
  assert all(n.language == "c" for n in nodes) and nodes
  # The default is Python only: today's runs read what they read before.
  td = data.load_train_data(mixed, "train", "dev", seed=0)
  assert [r.id for r in td.records] == ["p/0"] and td.counts["other_language"] == 2
  with pytest.raises(ValueError, match="unknown language"):
    data.read_records(data.split_files(mixed, "train"), languages=("rust",))
  with pytest.raises(ValueError, match="no usable train record"):
    data.load_train_data(mixed, "train", "dev", seed=0, languages=("go",))
  assert data.training_cwes(mixed) == {"CWE-078", "CWE-079", "CWE-125"}


def test_prompts_and_node_programs_in_the_record_language(mixed):
  records, nodes = data.load_nodes(data.split_files(mixed, "train"), languages=("c", "javascript"))
  by_id = {r.id: r for r in records}
  # SVEN's C pairs have no prompt: the signature, as a comment of the language.
  assert data.model_prompt(by_id["c/0"]) == "// int get(int *a, int n, int i)\n"
  assert data.model_prompt(by_id["j/0"]) == "// Greet a user.\n"
  c_node = next(n for n in nodes if n.language == "c")
  assert c_node.prefix.endswith("{\n") and c_node.fixed_lines[0].strip().startswith("if (i < 0")
  # The golden continuation at the node ends where the function does; the node's task is a C task.
  whole = c_node.golden_rest + "\nint main(void) { return 0; }\n"
  assert program.assemble_program(c_node.prefix, whole, language="c") == c_node.prefix + c_node.golden_rest
  assert program.node_task(c_node, len(c_node.prefix)).language == "c"


def test_tokenizer_covers_every_language_of_its_corpus(mixed, tmp_path):
  texts = list(tokenizer_lib.iter_code_texts(mixed))
  assert any("a[i]" in t for t in texts) and any("${name}" in t for t in texts)
  assert not any("a[i]" in t for t in tokenizer_lib.iter_code_texts(mixed, ["python"]))
  tok = tokenizer_lib.train_tokenizer(texts, tokenizer_lib.min_vocab_size(texts) + 64, tmp_path / "t.model")
  for code in (C_FIXED, JS_FIXED, "s := `raw`\n"):
    assert tok.decode(tok.encode(code)) == code


def test_resolve_dirs_takes_several_folders(mixed, tmp_path):
  c = config_lib.resolve_dirs(ml_collections.ConfigDict({"data_dir": mixed}), data_dir="data")
  assert c.data_dir == mixed
  with pytest.raises(ValueError, match="is not a directory"):
    config_lib.resolve_dirs(ml_collections.ConfigDict({"data_dir": f"{mixed},{tmp_path}/no"}),
                            data_dir="data")
