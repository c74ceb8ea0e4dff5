"""CWE-022: user paths joined under a base dir unchecked (or half-checked) vs realpath/resolve containment checks;
tar archives extracted with trusted member names vs filter="data" or checked members."""

from __future__ import annotations

import random

from tsp_jax.synth import core

CWE = "CWE-022"
DIRS = ("uploads", "reports", "docs", "media", "assets", "exports", "static", "files", "shared", "storage")


def _style(rng: random.Random) -> tuple[str, str]:
  """("os" | "pathlib", the prompt's import line)."""
  style = rng.choice(("os", "pathlib"))
  return style, "import os\n" if style == "os" else "from pathlib import Path\n"


def read_file(rng: random.Random) -> core.Instance:
  """The text of a file named by the user under a base directory."""
  noun, where = core.pick(rng, core.NOUNS)[0], rng.choice(DIRS)
  fn = core.snake(rng.choice(("read", "load", "get", "fetch", "open")), noun, rng.choice(("file", "text", "")))
  names = core.Names(rng, reserved=(fn, "f"))
  base, name = names.pick(("base_dir", f"{where}_dir", "base", "folder")), names.pick(("name", "filename", "rel_path"))
  root, path = names.pick(("root", "base_path", "top")), names.pick(("path", "full_path", "target"))
  style, imports = _style(rng)
  prompt = (f"{imports}\n\ndef {fn}({base}: str, {name}: str) -> str:\n" +
            core.docstring(rng, (f"Return the text of the {noun} file {name}, a path relative to {base}.",
                                 f"Read the file {name} from the {where} directory {base}.",
                                 f"Load a {noun} file that lives under {base} and return its contents."),
                           (f"{name} may name a file in a subfolder.",
                            f"Raise ValueError when it points outside {base}.")))
  err = f'raise ValueError(f"{{{name}!r}} is outside {{{base}!r}}")'
  if style == "os":
    read = f'with open({path}, encoding="utf-8") as f:\n' + " " * 12 + "return f.read()"  # nested in the blocks below
    head = f"{root} = os.path.realpath({base})\n{' ' * 8}{path} = os.path.realpath(os.path.join({root}, {name}))"
    secure = (core.body(f"""
        {head}
        if os.path.commonpath([{root}, {path}]) != {root}:
            {err}
        {read}"""), core.body(f"""
        {head}
        if not {path}.startswith({root} + os.sep):
            {err}
        {read}"""))
    vulnerable = (core.body(f"""
        {path} = os.path.join({base}, {name})
        {read}"""), core.body(f"""
        {path} = os.path.normpath(os.path.join({base}, {name}))
        if not {path}.startswith(os.path.normpath({base})):
            {err}
        {read}"""))
  else:
    read = f'return {path}.read_text(encoding="utf-8")'
    head = f"{root} = Path({base}).resolve()\n{' ' * 8}{path} = ({root} / {name}).resolve()"
    secure = (core.body(f"""
        {head}
        if not {path}.is_relative_to({root}):
            {err}
        {read}"""), core.body(f"""
        {head}
        if {root} not in {path}.parents:
            {err}
        {read}"""))
    vulnerable = (core.body(f"""
        {path} = Path({base}) / {name}
        {read}"""), core.body(f"""
        {path} = Path({base}) / {name}.replace("../", "")
        {read}"""))
  tests = core.test_module(fn, f'''
      def make_tree(tmp_path):
          base = tmp_path / "{where}"
          (base / "sub").mkdir(parents=True)
          (base / "a.txt").write_text("alpha")
          (base / "sub" / "b.txt").write_text("beta")
          (tmp_path / "secret.txt").write_text("TOP SECRET")
          (tmp_path / "{where}_private").mkdir()
          (tmp_path / "{where}_private" / "secret.txt").write_text("TOP SECRET")
          return str(base)


      @pytest.mark.functionality
      def test_reads(tmp_path):
          base = make_tree(tmp_path)
          assert {fn}(base, "a.txt") == "alpha"
          assert {fn}(base, "sub/b.txt") == "beta"''', f'''
      @pytest.mark.security
      @pytest.mark.parametrize("kind", ["parent", "nested", "absolute", "sibling"])
      def test_outside_base_refused(tmp_path, kind):
          base = make_tree(tmp_path)
          name = {{"parent": "../secret.txt", "nested": "sub/../../secret.txt",
                  "sibling": "../{where}_private/secret.txt", "absolute": str(tmp_path / "secret.txt")}}[kind]
          with pytest.raises(ValueError):
              {fn}(base, name)''')
  return core.Instance("path_traversal", "read_file", CWE, fn, prompt, secure, vulnerable, tests)


def save_upload(rng: random.Random) -> core.Instance:
  """Bytes written to a file named by the user, directly inside an upload directory."""
  noun, where = core.pick(rng, core.NOUNS)[0], rng.choice(DIRS)
  fn = core.snake(rng.choice(("save", "store", "write", "put")), noun, rng.choice(("upload", "file", "attachment")))
  names = core.Names(rng, reserved=(fn, "f"))
  folder = names.pick(("upload_dir", f"{where}_dir", "dest_dir", "target_dir"))
  name, data = names.pick(("filename", "name", "file_name")), names.pick(("data", "content", "payload", "blob"))
  root, path = names.pick(("root", "base", "folder_path")), names.pick(("path", "target", "dest"))
  style, imports = _style(rng)
  params = [f"{folder}: str", f"{name}: str", f"{data}: bytes"]
  name_first = rng.random() < 0.4
  if name_first:
    params[0], params[1] = params[1], params[0]
  prompt = (f"{imports}\n\ndef {fn}({', '.join(params)}) -> str:\n" +
            core.docstring(rng, (f"Write the uploaded {noun} {data} to the file {name} inside {folder}.",
                                 f"Store an uploaded {noun} as {folder}/{name}.",
                                 f"Save {data} under the client-chosen file name {name} in the {where} folder."),
                           (f"{name} must name a file directly inside {folder}; raise ValueError otherwise. "
                            "Return the path written.",)))
  err = f'raise ValueError(f"bad file name {{{name}!r}}")'
  if style == "os":
    write = f'with open({path}, "wb") as f:\n{" " * 12}f.write({data})\n{" " * 8}return {path}'
    secure = (core.body(f"""
        {root} = os.path.realpath({folder})
        {path} = os.path.realpath(os.path.join({root}, {name}))
        if os.path.dirname({path}) != {root}:
            {err}
        {write}"""), core.body(f"""
        if {name} in ("", ".", "..") or os.path.basename({name}) != {name}:
            {err}
        {path} = os.path.join({folder}, {name})
        {write}"""))
    vulnerable = (core.body(f"""
        {path} = os.path.join({folder}, {name})
        {write}"""), core.body(f"""
        {path} = os.path.join({folder}, {name}.replace("../", ""))
        {write}"""))
  else:
    write = f"{path}.write_bytes({data})\n{' ' * 8}return str({path})"
    secure = (core.body(f"""
        {root} = Path({folder}).resolve()
        {path} = ({root} / {name}).resolve()
        if {path}.parent != {root}:
            {err}
        {write}"""), core.body(f"""
        {root} = Path({folder}).resolve()
        {path} = ({root} / {name}).resolve()
        if {path}.name != {name} or not {path}.is_relative_to({root}):
            {err}
        {write}"""))
    vulnerable = (core.body(f"""
        {path} = Path({folder}) / {name}
        {write}"""), core.body(f"""
        {path} = Path({folder}) / {name}.lstrip("/")
        {write}"""))
  call = (lambda d, n, b: f"{fn}({n}, {d}, {b})") if name_first else (lambda d, n, b: f"{fn}({d}, {n}, {b})")
  tests = core.test_module(fn, f'''
      def make_dir(tmp_path):
          target = tmp_path / "{where}"
          target.mkdir()
          return str(target)


      @pytest.mark.functionality
      def test_saves(tmp_path):
          folder = make_dir(tmp_path)
          written = {call("folder", '"a.txt"', 'b"alpha"')}
          assert (tmp_path / "{where}" / "a.txt").read_bytes() == b"alpha"
          with open(written, "rb") as f:
              assert f.read() == b"alpha"''', f'''
      @pytest.mark.security
      @pytest.mark.parametrize("kind", ["parent", "doubled", "absolute"])
      def test_nothing_written_outside(tmp_path, kind):
          folder = make_dir(tmp_path)
          absolute = str(tmp_path / "evil.txt")
          name = {{"parent": "../evil.txt", "doubled": "....//evil.txt", "absolute": absolute}}[kind]
          try:
              {call("folder", "name", 'b"owned"')}
          except (ValueError, OSError):
              pass
          assert not (tmp_path / "evil.txt").exists()''')
  return core.Instance("path_traversal", "save_upload", CWE, fn, prompt, secure, vulnerable, tests)


def extract_archive(rng: random.Random) -> core.Instance:
  """A user-supplied tar archive unpacked into a directory; the names of the files extracted."""
  noun, adj = core.pick(rng, core.NOUNS)[0], core.pick(rng, core.ADJECTIVES)[0]
  fn = core.snake(rng.choice(("extract", "unpack", "install", "import", "expand")), adj, noun, "archive")
  names = core.Names(rng, reserved=(fn, "m"))
  archive, dest = names.pick(("archive", "tar_path", "bundle", "upload")), names.pick(("dest", "dest_dir", "target"))
  tar = names.pick(("tar", "tf", "bundle_file"))
  root, member = names.pick(("root", "base", "out_dir")), names.pick(("member", "info", "entry"))
  prompt = (f"import os\nimport tarfile\n\n\ndef {fn}({archive}: str, {dest}: str) -> list[str]:\n" +
            core.docstring(rng, (f"Extract the uploaded {noun} tar archive {archive} into the directory {dest}.",
                                 f"Unpack the {adj} {noun} bundle {archive} (a tar file, maybe gzipped) into {dest}.",
                                 f"Install the files of the tarball {archive} under {dest}."),
                           ("Return the sorted names of the regular files extracted.",
                            f"Refuse (raise) archives whose members would land outside {dest}.")))
  listing = f"return sorted(m.name for m in {tar}.getmembers() if m.isfile())"
  secure = (core.body(f"""
      with tarfile.open({archive}) as {tar}:
          {tar}.extractall({dest}, filter="data")
          {listing}"""), core.body(f"""
      {root} = os.path.realpath({dest})
      with tarfile.open({archive}) as {tar}:
          for {member} in {tar}.getmembers():
              if os.path.commonpath([{root}, os.path.realpath(os.path.join({root}, {member}.name))]) != {root}:
                  raise ValueError(f"unsafe member {{{member}.name!r}}")
              if {member}.issym() or {member}.islnk() or {member}.isdev():
                  raise ValueError(f"unsupported member {{{member}.name!r}}")
          for {member} in {tar}.getmembers():
              {tar}.extract({member}, {root})
          {listing}"""))
  vulnerable = (core.body(f"""
      with tarfile.open({archive}) as {tar}:
          {tar}.extractall({dest})
          {listing}"""), core.body(f"""
      {root} = os.path.realpath({dest})
      with tarfile.open({archive}) as {tar}:
          for {member} in {tar}.getmembers():
              if {member}.name.startswith("/"):
                  raise ValueError(f"unsafe member {{{member}.name!r}}")
          for {member} in {tar}.getmembers():
              {tar}.extract({member}, {root})
          {listing}"""))
  tests = core.test_module(fn, f'''
      import io
      import tarfile


      def make_archive(path, files):
          with tarfile.open(path, "w:gz") as tar:
              for name, data in files.items():
                  info = tarfile.TarInfo(name)
                  info.size = len(data)
                  tar.addfile(info, io.BytesIO(data))
          return str(path)


      @pytest.mark.functionality
      def test_extracts(tmp_path):
          archive = make_archive(tmp_path / "good.tar.gz", {{"a.txt": b"alpha", "sub/b.txt": b"beta"}})
          out = tmp_path / "out"
          out.mkdir()
          assert {fn}(archive, str(out)) == ["a.txt", "sub/b.txt"]
          assert (out / "a.txt").read_bytes() == b"alpha"
          assert (out / "sub" / "b.txt").read_bytes() == b"beta"''', f'''
      @pytest.mark.security
      @pytest.mark.parametrize("kind", ["parent", "nested"])
      def test_no_member_escapes(tmp_path, kind):
          evil = {{"parent": "../escaped.txt", "nested": "sub/../../escaped.txt"}}[kind]
          archive = make_archive(tmp_path / "evil.tar.gz", {{"a.txt": b"alpha", evil: b"owned"}})
          out = tmp_path / "out"
          out.mkdir()
          try:
              {fn}(archive, str(out))
          except Exception:
              pass
          assert not (tmp_path / "escaped.txt").exists()''')
  return core.Instance("path_traversal", "extract_archive", CWE, fn, prompt, secure, vulnerable, tests)


FAMILY = core.Family("path_traversal", CWE, (read_file, save_upload, extract_archive))
