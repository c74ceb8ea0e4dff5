"""Run untrusted programs in a throw-away sandbox: limits, no network, nothing outside its directory changes.

`run(argv, files, limits) -> SandboxResult` writes `files` into a fresh directory and runs `argv` there under
rlimits, a wall clock, a scrubbed environment, read-only mounts and no network; `mode()` says which network
isolation runs here (`NETNS` or `SOCKET_GUARD`). What each run gets, and why: docs/verifier.md ("Sandbox").
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import json
import os
import re
import resource
import selectors
import shutil
import signal as signal_lib
import stat as stat_lib
import subprocess
import sys
import tempfile
import threading
import time
from typing import Mapping, Sequence

NETNS = "netns"
SANDBOX_TOKEN = "$SANDBOX"  # in argv / env values: replaced by the sandbox dir's absolute path
SOCKET_GUARD = "socket-guard"

_UID_BASE = 2_000_000_000  # dedicated sandbox uids/gids: _UID_BASE + slot
_UID_SLOTS = 4096
_MIB = 1 << 20
_UNSHARE_NS = ("--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc")
_EXEC_FAILED = 127  # launcher's exit code for the program when execve fails (as a shell does)
_BACKSTOP_GRACE_S = 2  # the launcher ends its run itself at wall_s + this, should its caller be gone

_SOCKET_GUARD_SRC = '''"""Sandbox socket guard: no network sockets (only AF_UNIX)."""
import socket as _socket


class _GuardedSocket(_socket.socket):
  def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
    if fileno is None and family != _socket.AF_UNIX:
      raise PermissionError("network access is disabled in the sandbox")
    super().__init__(family, type, proto, fileno)


_socket.socket = _GuardedSocket
'''


@dataclasses.dataclass(frozen=True)
class Limits:
  """Resource limits of one sandboxed run (each process of the run gets the rlimits)."""
  cpu_s: float = 10.0  # CPU seconds per process (RLIMIT_CPU, rounded up)
  wall_s: float = 20.0  # wall-clock seconds for the whole run
  address_space_mb: int = 2048  # RLIMIT_AS per process, MiB
  max_processes: int = 64  # RLIMIT_NPROC (processes + threads of the sandbox uid)
  file_size_mb: int = 16  # RLIMIT_FSIZE, MiB
  open_files: int = 256  # RLIMIT_NOFILE
  output_bytes: int = 1 << 20  # kept per stream (stdout, stderr)


@dataclasses.dataclass(frozen=True)
class SandboxResult:
  """What one sandboxed run did."""
  returncode: int  # exit status; -N if killed by signal N (subprocess convention)
  stdout: str  # decoded UTF-8 with errors="replace", at most output_bytes bytes of it
  stderr: str
  stdout_truncated: bool
  stderr_truncated: bool
  timed_out: bool  # the wall clock ran out and the run was killed
  signal: int | None  # the signal that ended the program, if any (SIGKILL on timeout, SIGXCPU, ...)
  elapsed_s: float  # wall-clock seconds from start to the last process's end
  network: str  # "netns" | "socket-guard"
  collected: Mapping[str, bytes] = dataclasses.field(default_factory=dict)  # files read back (`collect`)

  @property
  def truncated(self) -> bool:
    return self.stdout_truncated or self.stderr_truncated


class SandboxError(RuntimeError):
  """The sandbox itself failed to start (not the program's fault)."""


_level_lock = threading.Lock()
_level_cache: str | None = None


def mode() -> str:
  """The network isolation sandboxes get here: `NETNS` (a network namespace via unshare) or `SOCKET_GUARD`."""
  return SOCKET_GUARD if _level() == "plain" else NETNS


def _level() -> str:
  """Isolation level available here: "root", "userns" or "plain" (see the module docstring); probed once."""
  global _level_cache
  with _level_lock:
    if _level_cache is None:
      _level_cache = _probe_level()
    return _level_cache


def _probe_level() -> str:
  unshare = shutil.which("unshare")
  if unshare is None:
    return "plain"
  candidates = [("root", [unshare, *_UNSHARE_NS])] if os.geteuid() == 0 else []
  candidates.append(("userns", [unshare, "--user", "--map-root-user", *_UNSHARE_NS]))
  for name, cmd in candidates:
    try:
      ok = subprocess.run([*cmd, "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
      ok = False
    if ok:
      return name
  return "plain"


def run(argv: Sequence[str], files: Mapping[str, str | bytes], limits: Limits,
        env: Mapping[str, str] | None = None, links: Mapping[str, str] | None = None,
        collect: Sequence[str] = ()) -> SandboxResult:
  """Runs `argv` in a fresh sandbox dir holding `files` (relative path -> text or bytes).

  Text is written as UTF-8 with surrogateescape (a str decoded that way round-trips arbitrary bytes).
  `SANDBOX_TOKEN` in `argv` or `env` values is replaced by the sandbox dir's absolute path. `links` maps
  relative paths inside the sandbox to absolute paths outside (symlinks, e.g. to a tool binary; the targets
  are mounted read-only where the sandbox would hide them, and must be readable by others). `env` is added
  to the scrubbed environment. `collect`: relative paths of
  regular files read back (at most output_bytes each, symlinks not followed) into `result.collected`
  before the dir is deleted. Raises SandboxError only when the sandbox cannot start; whatever the program
  does comes back in the result.
  """
  if not argv:
    raise ValueError("empty argv")
  level = _level()
  _sweep_stale_once()
  root = tempfile.mkdtemp(prefix=f"tsp_sandbox_{os.getpid()}_")
  slot_fd = None
  try:
    os.chmod(root, 0o711)  # others may traverse (to reach box) but not list
    box = os.path.join(root, "box")
    os.mkdir(box, 0o700)
    os.mkdir(os.path.join(box, "tmp"), 0o700)
    _write_files(box, files, links or {})
    if level == "plain":
      _write_files(box, {"sitecustomize.py": _SOCKET_GUARD_SRC}, {})
    uid = None
    if os.geteuid() == 0 and (level == "root" or (level == "plain" and _interpreter_visible())):
      slot_fd, uid = _acquire_uid()
      _chown_tree(box, uid)
    child_env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                 "HOME": box, "TMPDIR": os.path.join(box, "tmp"), "PYTHONDONTWRITEBYTECODE": "1",
                 "PYTHONPATH": box, **(env or {})}
    child_env = {k: v.replace(SANDBOX_TOKEN, box) for k, v in child_env.items()}
    try:
      res = _run_launcher(level, [a.replace(SANDBOX_TOKEN, box) for a in argv], box, child_env, uid, limits,
                          sorted({os.path.realpath(t) for t in (links or {}).values()}))
    finally:
      if level == "plain" and uid is not None:
        _kill_uid(uid)  # no pid namespace: processes that left the group (setsid) die here
    return dataclasses.replace(res, collected={rel: _read_back(box, rel, limits.output_bytes)
                                               for rel in collect})
  finally:
    if slot_fd is not None:
      os.close(slot_fd)  # releases the uid slot's flock
    _rmtree(root)


def check_interpreter() -> None:
  """Raises SandboxError when this interpreter cannot run a program inside the sandbox (e.g. a virtualenv whose
  path goes through /tmp or the home directory, which the sandbox masks): then every test would end in an
  error, and a verifier pool must fail at its start rather than judge nothing."""
  res = run([sys.executable, "-I", "-S", "-c", "pass"], {}, Limits())
  if res.returncode != 0:
    raise SandboxError(f"{sys.executable} does not run inside the sandbox (exit status {res.returncode}: "
                       f"{res.stderr.strip()[-300:]!r}); the sandbox masks /tmp, /var/tmp, /dev/shm and the home "
                       "directory, so run from a checkout and virtualenv outside them")


_swept = threading.Event()


def _sweep_stale_once() -> None:
  """Deletes sandbox dirs whose creating process is gone (a killed caller cannot clean up); once a process."""
  if _swept.is_set():
    return
  _swept.set()
  tmp = tempfile.gettempdir()
  for name in os.listdir(tmp):
    m = re.fullmatch(r"tsp_sandbox_(\d+)_\w+", name)
    if m and not _alive(int(m.group(1))):
      _rmtree(os.path.join(tmp, name))


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass
  return True


def _write_files(box: str, files: Mapping[str, str | bytes], links: Mapping[str, str]) -> None:
  for rel, target in [*files.items(), *links.items()]:
    path = os.path.normpath(os.path.join(box, rel))
    if os.path.isabs(rel) or not path.startswith(box + os.sep):
      raise ValueError(f"sandbox file path {rel!r} leaves the sandbox dir")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if rel in links:
      os.symlink(target, path)
    elif isinstance(target, bytes):
      with open(path, "wb") as f:
        f.write(target)
    else:
      with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(target)


def _read_back(box: str, rel: str, cap: int) -> bytes:
  """Up to `cap` bytes of the regular file `box/rel` as the program left it (b"" if it is not one)."""
  try:
    fd = os.open(os.path.join(box, rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
  except OSError:
    return b""
  with os.fdopen(fd, "rb") as f:
    return f.read(cap) if stat_lib.S_ISREG(os.fstat(fd).st_mode) else b""


def _chown_tree(top: str, uid: int) -> None:
  os.chown(top, uid, uid)
  for d, dirs, names in os.walk(top):
    for n in dirs + names:
      os.chown(os.path.join(d, n), uid, uid, follow_symlinks=False)


def _rmtree(path: str) -> None:
  """Deletes a sandbox tree even where the program removed permissions from its own directories."""
  def fix(func, p, _):
    try:
      os.chmod(os.path.dirname(p), 0o700)
      os.chmod(p, 0o700)
    except OSError:
      pass
    try:
      func(p)
    except OSError:
      pass
  shutil.rmtree(path, onerror=fix)


def _acquire_uid() -> tuple[int, int]:
  """(lock fd, uid): a sandbox uid no other live sandbox on this host holds (flock on a per-slot file)."""
  lock_dir = os.path.join(tempfile.gettempdir(), "tsp_sandbox_uids")
  os.makedirs(lock_dir, mode=0o700, exist_ok=True)
  start = (os.getpid() * 7 + threading.get_ident()) % _UID_SLOTS  # spread the search, not required for safety
  for i in range(_UID_SLOTS):
    slot = (start + i) % _UID_SLOTS
    fd = os.open(os.path.join(lock_dir, str(slot)), os.O_RDWR | os.O_CREAT, 0o600)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      continue
    return fd, _UID_BASE + slot
  raise SandboxError("no free sandbox uid slot")


def _interpreter_visible() -> bool:
  """Whether other users can run this interpreter (no ancestor of its prefixes hides it)."""
  return not any(map(_hidden_ancestor, _prefixes()))


def _prefixes() -> list[str]:
  return sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})


def _kill_uid(uid: int) -> None:
  """SIGKILLs every process of `uid` (a helper under that uid calls kill(-1), which spares only itself)."""
  for _ in range(3):  # a fork bomb may fork between the scan and the kill: repeat
    subprocess.run([sys.executable, "-I", "-S", "-c", "import os, signal\ntry:\n  os.kill(-1, signal.SIGKILL)\n"
                    "except ProcessLookupError:\n  pass"], user=uid, group=uid, extra_groups=[],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={}, check=False)


def _hidden_ancestor(path: str) -> str | None:
  """The outermost ancestor of `path` (itself included) that other users cannot traverse, or None."""
  parts = path.strip("/").split("/")
  for i in range(1, len(parts) + 1):
    p = "/" + "/".join(parts[:i])
    try:
      if not os.stat(p).st_mode & 0o001:
        return p
    except OSError:
      return None
  return None


def _mount_plan(box: str, limits: Limits, link_targets: Sequence[str]) -> dict:
  """What the launcher mounts: everything read-only, tmpfs masks, box rw, interpreter + link targets ro."""
  expose = [p for p in _prefixes() + list(link_targets) if os.path.exists(p)]
  masks = {"/tmp", "/var/tmp", "/dev/shm", os.path.realpath(os.path.expanduser("~"))}
  masks |= {a for a in map(_hidden_ancestor, expose) if a}
  masks = sorted(m for m in masks if m != "/" and os.path.isdir(m))
  return {"masks": masks, "tmpfs_size_mb": 4 * limits.file_size_mb,
          "binds": [[box, False]] + [[p, True] for p in expose]}


def _run_launcher(level: str, argv: list[str], box: str, child_env: dict, uid: int | None,
                  limits: Limits, link_targets: Sequence[str]) -> SandboxResult:
  status_r, status_w = os.pipe()
  cfg = {"argv": argv, "env": child_env, "cwd": box, "uid": uid, "status_fd": status_w,
         "limits": dataclasses.asdict(limits), "nproc_base": 0 if uid is not None else _user_process_count(),
         "mounts": _mount_plan(box, limits, link_targets) if level != "plain" else None,
         "backstop_s": int(limits.wall_s) + _BACKSTOP_GRACE_S}
  launcher = [sys.executable, "-I", "-S", os.path.abspath(__file__), json.dumps(cfg)]
  if level == "root":
    cmd = [shutil.which("unshare"), *_UNSHARE_NS, *launcher]
  elif level == "userns":
    cmd = [shutil.which("unshare"), "--user", "--map-root-user", *_UNSHARE_NS, *launcher]
  else:
    cmd = launcher
  start = time.monotonic()
  try:
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin"}, start_new_session=True,
                            pass_fds=(status_w,))
  except OSError as e:
    os.close(status_r)
    raise SandboxError(f"cannot start the sandbox launcher: {e}") from e
  finally:
    os.close(status_w)
  try:
    out, err, timed_out = _collect(proc, limits, start)
    elapsed = time.monotonic() - start
    with os.fdopen(status_r, "rb") as f:
      status = f.read()
    status_r = None
  finally:
    if status_r is not None:
      os.close(status_r)
  if timed_out:
    code, sig = -signal_lib.SIGKILL, signal_lib.SIGKILL
  elif status:
    info = json.loads(status)
    if "error" in info:
      raise SandboxError(f"sandbox set-up failed: {info['error']}")
    code, sig = (info["exit"], None) if "exit" in info else (-info["signal"], info["signal"])
  else:  # the launcher died before reporting (killed from outside)
    code = proc.returncode
    sig = -code if code < 0 else None
  cap = limits.output_bytes
  return SandboxResult(returncode=code, stdout=out[:cap].decode("utf-8", "replace"),
                       stderr=err[:cap].decode("utf-8", "replace"), stdout_truncated=len(out) > cap,
                       stderr_truncated=len(err) > cap, timed_out=timed_out, signal=sig, elapsed_s=elapsed,
                       network=SOCKET_GUARD if level == "plain" else NETNS)


def _user_process_count() -> int:
  uid = os.getuid()
  n = 0
  for name in os.listdir("/proc"):
    if name.isdigit():
      try:
        n += os.stat(f"/proc/{name}").st_uid == uid
      except OSError:
        pass
  return n


def _kill_group(proc: subprocess.Popen) -> None:
  try:
    os.killpg(proc.pid, signal_lib.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass


def _collect(proc: subprocess.Popen, limits: Limits, start: float) -> tuple[bytes, bytes, bool]:
  """Reads both pipes until EOF (keeping output_bytes + 1 of each), killing the group at the deadline.

  Returns (stdout, stderr, timed_out). Once the launcher has exited, the rest of its group is killed too, so
  a background process holding the pipes cannot stall the read.
  """
  keep = limits.output_bytes + 1  # one byte more than the cap tells truncation apart
  out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
  bufs = {out_fd: bytearray(), err_fd: bytearray()}
  sel = selectors.DefaultSelector()
  for fd in bufs:
    sel.register(fd, selectors.EVENT_READ)
  deadline = start + limits.wall_s
  timed_out = killed = False
  try:
    while sel.get_map():
      now = time.monotonic()
      if now >= deadline:
        if killed:  # pipes still open after SIGKILL of the group: a process escaped it (plain mode)
          break
        timed_out = killed = True
        _kill_group(proc)
        deadline = now + 5.0  # drain what is left
      for key, _ in sel.select(timeout=min(deadline - now, 0.1)):
        data = os.read(key.fd, 1 << 16)
        if not data:
          sel.unregister(key.fd)
        elif len(bufs[key.fd]) < keep:
          bufs[key.fd] += data[:keep - len(bufs[key.fd])]
      if not killed and _exited(proc.pid):
        killed = True
        _kill_group(proc)
  finally:
    sel.close()
    if not killed:
      _kill_group(proc)
    try:
      proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      _kill_group(proc)
      proc.wait()
    proc.stdout.close()
    proc.stderr.close()
  return bytes(bufs[out_fd]), bytes(bufs[err_fd]), timed_out


def _exited(pid: int) -> bool:
  """Whether `pid` has exited, without reaping it (its pid, hence its group id, stays reserved)."""
  try:
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
  except ChildProcessError:
    return True


# ---------------------------------------------------------------------------------------------------------
# The launcher: this file run as a script (`python -I -S sandbox.py CONFIG`), inside the namespaces when
# there are any, as root there. It sets up the mounts, forks the program (rlimits, uid drop, execve),
# waits for it and reports its exit status as JSON on the status fd. Uses only the standard library.

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_RELATIME = 1, 2, 4, 32, 4096, 16384, 1 << 21
_ST_KEPT = os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC | os.ST_NOATIME | os.ST_NODIRATIME  # same bits as MS_*
_PR_SET_NO_NEW_PRIVS = 38
_PSEUDO_FS = ("/proc", "/sys", "/dev")


def _mount(libc, src: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
  enc = lambda s: None if s is None else s.encode()
  if libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
    err = ctypes.get_errno()
    raise OSError(err, f"mount {src or fstype} on {target}: {os.strerror(err)}")


def _mount_points() -> list[str]:
  """Mount points of this mount namespace, outermost first (from /proc/self/mountinfo; octal escapes undone)."""
  with open("/proc/self/mountinfo", "rb") as f:
    fields = [line.split()[4] for line in f]
  unescape = lambda m: bytes([int(m.group(1), 8)])
  points = {os.fsdecode(re.sub(rb"\\([0-7]{3})", unescape, field)) for field in fields}
  return sorted(points, key=lambda p: (p.count("/"), p))


def _remount(libc, path: str, readonly: bool) -> None:
  """Sets a mount's read-only bit in this namespace, keeping its nosuid/nodev/noexec/atime flags."""
  kept = os.statvfs(path).f_flag
  flags = _MS_REMOUNT | _MS_BIND | (kept & _ST_KEPT) | (_MS_RELATIME if kept & os.ST_RELATIME else 0)
  _mount(libc, None, path, None, flags | (_MS_RDONLY if readonly else 0), None)


def _setup_mounts(plan: dict) -> None:
  """Every mount read-only, fresh tmpfs over the masks, then the box (rw) and the exposed paths (ro) bound in.

  Runs in the launcher as root of the new mount namespace (its mounts are private copies: nothing here is
  seen outside).
  """
  libc = ctypes.CDLL(None, use_errno=True)
  fds = {path: os.open(path, os.O_PATH) for path, _ in plan["binds"]}  # before masks hide them
  for point in _mount_points():
    try:
      _remount(libc, point, readonly=True)
    except FileNotFoundError:
      pass  # under a mount point that hides it; what hides it is remounted on its own
    except OSError:
      if not any(point == d or point.startswith(d + "/") for d in _PSEUDO_FS):
        raise  # (kernel file systems may refuse: only the real root writes there anyway)
  for m in sorted(plan["masks"], key=lambda p: p.count("/")):
    os.makedirs(m, exist_ok=True)  # may sit inside an outer mask
    _mount(libc, "tmpfs", m, "tmpfs", _MS_NOSUID | _MS_NODEV,
           f"size={plan['tmpfs_size_mb']}m,mode={'1777' if m in ('/tmp', '/var/tmp', '/dev/shm') else '755'}")
  for path, readonly in sorted(plan["binds"], key=lambda b: b[0].count("/")):
    if readonly and not any(path == m or path.startswith(m + "/") for m in plan["masks"]):
      continue  # still visible where it was, and read-only already
    if not os.path.lexists(path):  # a mount point inside a mask
      os.makedirs(os.path.dirname(path), exist_ok=True)
      if stat_lib.S_ISDIR(os.fstat(fds[path]).st_mode):
        os.mkdir(path)
      else:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    _mount(libc, f"/proc/self/fd/{fds[path]}", path, None, _MS_BIND | _MS_REC, None)
    _remount(libc, path, readonly)
  for fd in fds.values():
    os.close(fd)


def _exec_program(cfg: dict) -> None:
  """In the forked child: rlimits, drop to the sandbox uid, execve. Never returns."""
  try:
    lim = cfg["limits"]
    cpu = int(-(-lim["cpu_s"] // 1))
    nproc = cfg["nproc_base"] + lim["max_processes"]
    for res, soft, hard in ((resource.RLIMIT_CPU, cpu, cpu + 1),
                            (resource.RLIMIT_AS, lim["address_space_mb"] * _MIB, None),
                            (resource.RLIMIT_NPROC, nproc, None),
                            (resource.RLIMIT_FSIZE, lim["file_size_mb"] * _MIB, None),
                            (resource.RLIMIT_NOFILE, lim["open_files"], None),
                            (resource.RLIMIT_CORE, 0, None)):
      resource.setrlimit(res, (soft, soft if hard is None else hard))
    if cfg["uid"] is not None:
      os.setgroups([])
      os.setgid(cfg["uid"])
      os.setuid(cfg["uid"])
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.chdir(cfg["cwd"])
    os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
  except BaseException as e:  # noqa: BLE001  (report anything, then leave the child)
    os.write(2, f"sandbox: cannot run {cfg['argv'][0]}: {e!r}\n".encode())
  os._exit(_EXEC_FAILED)


def _backstop(cfg: dict) -> None:
  """SIGALRM handler: the wall clock of a run whose caller is gone ran out; end every process of the run."""
  if cfg["uid"] is not None and os.fork() == 0:  # no pid namespace in plain mode: kill the uid's processes
    os.setuid(cfg["uid"])
    os.kill(-1, signal_lib.SIGKILL)
    os._exit(0)
  os.killpg(0, signal_lib.SIGKILL)  # the launcher's group (as pid 1 of a namespace, its exit ends the rest)


def _launcher_main(cfg: dict) -> None:
  status_fd = cfg["status_fd"]
  os.set_inheritable(status_fd, False)  # the program never sees it
  report = lambda d: os.write(status_fd, json.dumps(d).encode())
  signal_lib.signal(signal_lib.SIGALRM, lambda *_: _backstop(cfg))
  signal_lib.alarm(cfg["backstop_s"])
  try:
    if cfg["mounts"]:
      _setup_mounts(cfg["mounts"])
    pid = os.fork()
  except OSError as e:
    report({"error": str(e)})
    os._exit(125)
  if pid == 0:
    _exec_program(cfg)
  while True:  # reap every child (as pid 1, orphans come here too) until the program ends
    try:
      wpid, st = os.wait()
    except ChildProcessError:
      report({"error": "lost the program process"})
      os._exit(125)
    if wpid == pid:
      break
  report({"signal": os.WTERMSIG(st)} if os.WIFSIGNALED(st) else {"exit": os.WEXITSTATUS(st)})
  os._exit(0)


if __name__ == "__main__":
  _launcher_main(json.loads(sys.argv[1]))
