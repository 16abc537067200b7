"""The boundary around user code: how a job's process is started, isolated and limited.

Every job, init script and warm runtime is started by `command()`, which wraps the runtime's
argv in a short exec chain:

    sh (joins the run's cgroups) -> prlimit (per-process limits) -> bwrap (namespaces, mounts)
       -> setpriv (drops to JOB_UID when the worker is root) -> the runtime

bubblewrap gives the job its own PID, IPC and UTS namespaces (and network, with `--no-network`),
a read-only view of the system (/usr, /etc and the interpreter's prefix), a private /tmp and
exactly one writable folder, its own, mounted at /job. Nothing else of the host file system (the
data directory, other jobs' folders, the worker's files, /root, /home, /run) exists in there.
When the job's main process exits, bwrap's PID 1 exits and the kernel kills every process left in
the namespace, setsid and double forks included; `--die-with-parent` does the same if the worker
itself dies (SIGKILL included), so a redelivered copy never runs beside it. With `none` none of
this holds (docs/security.md lists what is given up): the chain ends with `setpriv --pdeathsig
KILL` instead of bwrap, so the job's main process dies with the worker, but what it started lives
on (docs/production.md, When two copies of a job can overlap); the run's cgroup still lets a
live worker kill what the job left behind, where cgroups are writable.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import msgspec

from shared.events import JobLimits

JOB_UID = 65534  # nobody: what jobs run as when the worker is root (JOB_UID overrides)
MOUNT_POINT = "/job"  # where a job sees its own folder
INIT_POINT = "/init"  # where jobs see what the init script installed (read-only)
_LAUNCH = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
# Exit statuses a shell or bwrap reports for a process killed by these signals (128 + n).
EXIT_CPU = 128 + signal.SIGXCPU
EXIT_FSIZE = 128 + signal.SIGXFSZ
EXIT_KILLED = 128 + signal.SIGKILL


class SandboxUnavailable(RuntimeError):
    """Raised when a group asks for bwrap on a worker where it cannot run."""


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """How one run is isolated: the sandbox kind, network, and its effective limits."""

    kind: str  # "bwrap" | "none"
    network: bool = True
    limits: JobLimits
    uid: int | None = None  # drop to this uid inside the sandbox (None: keep the worker's)
    devices: tuple[str, ...] = ()  # device paths or globs passed through (JOB_DEVICES: GPUs)


def probe() -> str | None:
    """None when bwrap works here with the namespaces we use, else why not (shown to users)."""
    global _PROBED
    if _PROBED is not None:
        return _PROBED or None
    exe = shutil.which("bwrap")
    if exe is None:
        _PROBED = ("bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap;"
                   " Fedora: dnf install bubblewrap)")
        return _PROBED
    policy = Policy(kind="bwrap", network=False, limits=JobLimits(), uid=default_uid())
    argv = _bwrap(policy, ["true"], job_dir=None, ro=())
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _PROBED = f"bubblewrap could not start here: {exc}"
        return _PROBED
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        _PROBED = (f"bubblewrap cannot create namespaces here ({why[-1] if why else 'exit '}"
                   f"{'' if why else done.returncode}); a container needs CAP_SYS_ADMIN or an"
                   " unconfined seccomp profile for it")
        return _PROBED
    _PROBED = ""
    return None


_PROBED: str | None = None


def default_uid() -> int | None:
    """Jobs of a root worker run as JOB_UID (default nobody); a non-root worker keeps its uid."""
    if os.geteuid() != 0:
        return None
    return int(os.environ.get("JOB_UID", JOB_UID))


@functools.cache
def runtime_paths() -> tuple[str, ...]:
    """Read-only paths a job needs besides /usr and /etc: the Python prefix jobs run with."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    return tuple(sorted(p for p in paths if not p.startswith("/usr/")))


def command(policy: Policy, argv: list[str], *, job_dir: Path | None,
            procs_files: tuple[str, ...] = (), cpu_limit: bool = True,
            ro: tuple[str, ...] | None = None, init_dir: Path | None = None,
            mount_at: str = MOUNT_POINT, files: dict[str, int] | None = None,
            seccomp_fd: int | None = None) -> list[str]:
    """The full argv that runs `argv` under `policy`: cgroups, rlimits, then the sandbox.

    With bwrap, a job's folder is a fresh tmpfs (its pages count against the job's memory, it
    vanishes with the job, and no host disk is used) holding `files` (name -> an fd to copy
    from); `job_dir` instead binds a host folder there (the init script's, which must last).
    `init_dir` (what the group's init script installed) is mounted read-only at /init."""
    # sh only to join cgroups before anything runs (no exec param for that in Python's spawn).
    chain = ["/bin/sh", "-c", _LAUNCH, "sh", *procs_files, "--"] if procs_files else []
    chain += _prlimit(policy.limits, cpu_limit=cpu_limit, cgroup=bool(procs_files))
    if policy.kind == "bwrap":
        chain += _bwrap(policy, argv, job_dir=job_dir,
                        ro=runtime_paths() if ro is None else ro, init_dir=init_dir,
                        mount_at=mount_at, files=files, seccomp_fd=seccomp_fd)
    else:
        chain += [*die_with_worker(), *argv]
    return chain


@functools.cache
def die_with_worker() -> tuple[str, ...]:
    """`setpriv --pdeathsig KILL --`: the kernel kills the process when the worker (its parent)
    dies. Empty where setpriv lacks the option (util-linux before 2.33): then an unsandboxed
    job outlives a killed worker entirely."""
    argv = ("setpriv", "--pdeathsig", "KILL", "--")
    try:
        done = subprocess.run([*argv, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return argv if done.returncode == 0 else ()


def _prlimit(limits: JobLimits, *, cpu_limit: bool, cgroup: bool) -> list[str]:
    out = ["prlimit"]
    if cpu_limit and limits.cpu_seconds:
        out.append(f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}")
    if limits.file_size:
        out.append(f"--fsize={limits.file_size}")
    if not cgroup and limits.memory:  # no memory cgroup: the best we have is per process
        out.append(f"--as={limits.memory}")
    out.append("--core=0")  # a crashing job must not write memory dumps
    return [*out, "--"]


def _bwrap(policy: Policy, argv: list[str], *, job_dir: Path | None,
           ro: tuple[str, ...], init_dir: Path | None = None,
           mount_at: str = MOUNT_POINT, files: dict[str, int] | None = None,
           seccomp_fd: int | None = None) -> list[str]:
    out = ["bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
           "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if seccomp_fd is not None:
        out += ["--seccomp", str(seccomp_fd)]
    if not policy.network:
        out.append("--unshare-net")
    if policy.uid is not None and os.geteuid() == 0:
        # Root bwrap keeps every capability unless told: keep only what setpriv needs to drop
        # to the job's uid (which then clears them); NO_NEW_PRIVS stops any regaining.
        out += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    out += _system_mounts()
    # Scratch space in memory, bounded: by the memory cgroup (tmpfs pages are charged to the
    # job), and by size where there is none. Mounted before the runtime's paths, which may lie
    # under /tmp (a virtualenv there) and must not be hidden by it.
    size = str(policy.limits.memory or 1 << 30)
    out += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", size,
            "--tmpfs", "/tmp"]
    made: set[str] = {"/", "/usr", "/etc", "/tmp", "/proc", "/dev", MOUNT_POINT, INIT_POINT}
    for path in ro:
        out += _parents(path, made)
        out += ["--ro-bind", path, path]
    for pattern in policy.devices:  # an operator's choice (JOB_DEVICES): GPUs, say
        for device in sorted(glob.glob(pattern)):
            out += ["--dev-bind-try", device, device]
    if init_dir is not None:
        out += ["--ro-bind-try", str(init_dir), INIT_POINT]
    if job_dir is not None:
        out += ["--bind", str(job_dir), mount_at]
    else:
        out += ["--perms", "0777", "--size", size, "--tmpfs", mount_at]
        for name, fd in (files or {}).items():
            out += ["--perms", "0644", "--file", str(fd), f"{mount_at}/{name}"]
    out += ["--chdir", mount_at]
    out.append("--")
    if policy.uid is not None and os.geteuid() == 0:
        out += ["setpriv", f"--reuid={policy.uid}", f"--regid={policy.uid}", "--clear-groups",
                "--inh-caps=-all", "--"]
    return out + argv


@functools.cache
def _system_mounts() -> tuple[str, ...]:
    """/usr and /etc read-only, and /bin, /lib... as the host has them (links or folders): read
    once per worker, not per job."""
    out = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            out += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir():
            out += ["--ro-bind", str(path), f"/{name}"]
    return tuple(out)


def _parents(path: str, made: set[str]) -> list[str]:
    """bwrap makes missing parents 0700 (unreadable to the job's uid): make them 0755 first."""
    out: list[str] = []
    parts = Path(path).parts
    for i in range(2, len(parts)):
        parent = str(Path(*parts[:i]))
        if parent not in made:
            made.add(parent)
            out += ["--perms", "0755", "--dir", parent]
    return out


def limit_error(code: int | None, limits: JobLimits, hits: list[str]) -> str | None:
    """A sentence naming the limit a run went over, from its exit status and cgroup counters."""
    if hits:
        return "; ".join(hits)
    if code == EXIT_CPU:
        return (f"the job used more than its {limits.cpu_seconds} s of CPU time"
                f" (limits.cpu_seconds) and was stopped")
    if code == EXIT_FSIZE:
        return (f"the job wrote a file larger than its limit of {size_text(limits.file_size)}"
                f" (limits.file_size) and was stopped")
    return None


def explain(error: str, limits: JobLimits) -> str:
    """A runtime's own error that a limit caused, with the limit named (python's EFBIG, say)."""
    if "File too large" in error:
        return f"{error} (the job's file size limit is {size_text(limits.file_size)}: limits.file_size)"
    if error.startswith("MemoryError"):
        return f"{error} (the job's memory limit is {size_text(limits.memory)}: limits.memory)"
    return error


def size_text(n: int | None) -> str:
    """Bytes for people: `512 MiB`, `1 GiB`, or `N bytes`."""
    if n is None:
        return "unlimited"
    for unit, div in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} bytes"
