"""CWE-078: shell command lines built from input (shell=True, os.system, getoutput) vs argument lists, no shell."""

from __future__ import annotations

import random

from tsp_jax.synth import core

CWE = "CWE-078"
# Shell payloads (one per quoting context) that would create `pwned` in the test's tmp_path; `{m}` is its path.
PAYLOADS = ("x; touch {m} #", "x'; touch {m} #", 'x"; touch {m} #', "$(touch {m})", "`touch {m}`")


def _security(call: str, setup: str = "") -> str:
  """A security test calling `call` (an expression using `payload`) once per shell payload."""
  return f'''
      @pytest.mark.security
      @pytest.mark.parametrize("shape", {list(PAYLOADS)!r})
      def test_no_shell_injection(tmp_path, shape):
          marker = tmp_path / "pwned"
          payload = shape.format(m=marker){setup}
          try:
              {call}
          except Exception:
              pass
          assert not marker.exists()'''


def count_lines(rng: random.Random) -> core.Instance:
  """The number of lines of a file, as `wc -l` counts them."""
  noun, adj = core.pick(rng, core.NOUNS)[0], rng.choice(("",) * 4 + core.ADJECTIVES)
  fn = core.snake(rng.choice(("count", "get", "measure", "tally")), adj, noun, "lines")
  names = core.Names(rng, reserved=(fn,))
  path = names.pick(("path", "filename", f"{noun}_path", f"{noun}_file"))
  prompt = (f"import subprocess\n\n\ndef {fn}({path}: str) -> int:\n" +
            core.docstring(rng, (f"Return the number of lines in the {noun} file at {path}, as counted by `wc -l`.",
                                 f"Count the lines of the file {path} with the `wc -l` command.",
                                 f"How many lines the {noun} file {path} has (run `wc -l` on it)."),
                           ("Raise an error when the command fails.",)))
  out, n = names.pick(("out", "output", "text")), names.pick(("count", "lines", "n"))
  result = names.pick(("result", "proc", "completed"))
  secure = (core.body(f"""
      {result} = subprocess.run(["wc", "-l", {path}], capture_output=True, text=True, check=True)
      {out} = {result}.stdout
      {n} = int({out}.split()[0])
      return {n}"""), core.body(f"""
      {out} = subprocess.check_output(["wc", "-l", "--", {path}], text=True)
      {n} = int({out}.split()[0])
      return {n}"""))
  vulnerable = (core.body(f"""
      {result} = subprocess.run(f"wc -l {{{path}}}", shell=True, capture_output=True, text=True, check=True)
      {out} = {result}.stdout
      {n} = int({out}.split()[0])
      return {n}"""), core.body(f"""
      {out} = subprocess.check_output("wc -l '%s'" % {path}, shell=True, text=True)
      {n} = int({out}.split()[0])
      return {n}"""), core.body(f"""
      {out} = subprocess.getoutput("wc -l " + {path})
      {n} = int({out}.split()[0])
      return {n}"""))
  tests = core.test_module(fn, f'''
      @pytest.mark.functionality
      def test_counts(tmp_path):
          target = tmp_path / "data.txt"
          target.write_text("one\\ntwo\\nthree\\n")
          assert {fn}(str(target)) == 3
          empty = tmp_path / "empty.txt"
          empty.write_text("")
          assert {fn}(str(empty)) == 0''', _security(f"{fn}(payload)"))
  return core.Instance("command_injection", "count_lines", CWE, fn, prompt, secure, vulnerable, tests)


def grep_lines(rng: random.Random) -> core.Instance:
  """The lines of a file that contain a fixed string, via `grep -F`."""
  noun = core.pick(rng, core.NOUNS)[0]
  fn = core.snake(rng.choice(("grep", "search", "find", "match")), noun, rng.choice(("lines", "log", "entries")))
  names = core.Names(rng, reserved=(fn, "_"))
  path, text = names.pick(("path", "log_path", f"{noun}_file")), names.pick(("pattern", "text", "needle", "word"))
  flags = rng.choice(("-F", "-Fi"))
  how = " ignoring case" if flags == "-Fi" else ""
  params = [f"{path}: str", f"{text}: str"]
  path_first = rng.random() < 0.5
  if not path_first:
    params.reverse()
  prompt = (f"import subprocess\n\n\ndef {fn}({', '.join(params)}) -> list[str]:\n" +
            core.docstring(rng, (f"Return the lines of the file {path} that contain {text}{how}, using grep.",
                                 f"Search the {noun} file {path} for the fixed string {text} with `grep {flags}`.",
                                 f"Lines of {path} containing {text}{how} (run grep on the file)."),
                           ("An empty list when no line matches.",)))
  res, out = names.pick(("result", "proc", "found")), names.pick(("out", "output", "stdout"))
  secure = (core.body(f"""
      {res} = subprocess.run(["grep", "{flags}", "--", {text}, {path}], capture_output=True, text=True)
      return {res}.stdout.splitlines()"""), core.body(f"""
      {res} = subprocess.Popen(["grep", "{flags}", "-e", {text}, {path}], stdout=subprocess.PIPE, text=True)
      {out}, _ = {res}.communicate()
      return {out}.splitlines()"""))
  vulnerable = (core.body(f"""
      {res} = subprocess.run(f"grep {flags} '{{{text}}}' {{{path}}}", shell=True, capture_output=True, text=True)
      return {res}.stdout.splitlines()"""), core.body(f"""
      {res} = subprocess.Popen('grep {flags} "%s" %s' % ({text}, {path}), shell=True, stdout=subprocess.PIPE, text=True)
      {out}, _ = {res}.communicate()
      return {out}.splitlines()"""), core.body(f"""
      {out} = subprocess.getoutput("grep {flags} -- " + {text} + " " + {path})
      return {out}.splitlines()"""))
  call = (lambda p, t: f"{fn}({p}, {t})") if path_first else (lambda p, t: f"{fn}({t}, {p})")
  tests = core.test_module(fn, f'''
      def make_file(tmp_path):
          target = tmp_path / "notes.txt"
          target.write_text("alpha one\\nbeta two\\nalpha three\\n")
          return str(target)


      @pytest.mark.functionality
      def test_matches(tmp_path):
          path = make_file(tmp_path)
          assert {call("path", '"alpha"')} == ["alpha one", "alpha three"]
          assert {call("path", '"two"')} == ["beta two"]
          assert {call("path", '"zeta"')} == []''',
                           _security(call("path", "payload"), "\n          path = make_file(tmp_path)"))
  return core.Instance("command_injection", "grep_lines", CWE, fn, prompt, secure, vulnerable, tests)


def make_archive(rng: random.Random) -> core.Instance:
  """A gzipped tar archive of a directory, made with the `tar` command."""
  noun, adj = core.pick(rng, core.NOUNS)[0], core.pick(rng, core.ADJECTIVES)[0]
  fn = core.snake(rng.choice(("archive", "pack", "bundle", "backup")), adj, noun + "s")
  names = core.Names(rng, reserved=(fn,))
  src, dest = names.pick(("src_dir", "folder", "source", f"{noun}_dir")), names.pick(("dest", "archive", "target"))
  prompt = (f"import os\nimport subprocess\n\n\ndef {fn}({src}: str, {dest}: str) -> str:\n" +
            core.docstring(rng, (f"Pack the contents of the directory {src} into the .tar.gz file {dest} with `tar`.",
                                 f"Archive the {adj} {noun} folder {src} as a gzipped tarball at {dest}.",
                                 f"Create {dest}, a tar.gz of everything under {src}, by running tar."),
                           (f"Members are relative to {src}. Return {dest}; raise an error when tar fails.",)))
  root = names.pick(("root", "base", "here"))
  head = f"{root} = os.path.abspath({src})"
  secure = (core.body(f"""
      {head}
      subprocess.run(["tar", "-czf", {dest}, "-C", {root}, "."], check=True)
      return {dest}"""), core.body(f"""
      {head}
      subprocess.check_call(["tar", "czf", {dest}, "--directory", {root}, "."])
      return {dest}"""))
  vulnerable = (core.body(f"""
      {head}
      if os.system(f"tar -czf {{{dest}}} -C {{{root}}} .") != 0:
          raise RuntimeError("tar failed")
      return {dest}"""), core.body(f"""
      {head}
      subprocess.run("tar -czf %s -C %s ." % ({dest}, {root}), shell=True, check=True)
      return {dest}"""), core.body(f"""
      {head}
      subprocess.check_call("tar czf '" + {dest} + "' --directory '" + {root} + "' .", shell=True)
      return {dest}"""))
  tests = core.test_module(fn, f'''
      import os
      import tarfile


      def make_tree(tmp_path):
          src = tmp_path / "tree"
          (src / "sub").mkdir(parents=True)
          (src / "a.txt").write_text("alpha")
          (src / "sub" / "b.txt").write_text("beta")
          return str(src)


      @pytest.mark.functionality
      def test_archives(tmp_path):
          out = str(tmp_path / "out.tar.gz")
          assert {fn}(make_tree(tmp_path), out) == out
          with tarfile.open(out) as tar:
              names = {{os.path.normpath(n) for n in tar.getnames()}}
              assert {{"a.txt", "sub/b.txt"}} <= names
              assert tar.extractfile("./sub/b.txt").read() == b"beta"''',
                           _security(f'{fn}(src, str(tmp_path) + "/" + payload)',
                                     "\n          src = make_tree(tmp_path)"))
  return core.Instance("command_injection", "make_archive", CWE, fn, prompt, secure, vulnerable, tests)


FAMILY = core.Family("command_injection", CWE, (count_lines, grep_lines, make_archive))
