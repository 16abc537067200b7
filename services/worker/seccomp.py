"""The system calls a sandboxed job may not make, as a classic BPF program for `bwrap --seccomp`.

Namespaces and mounts already wall a job in; this closes what they leave shared with the host:
- `listen` on the host's network (a job could take over a service's port while it restarts and
  read the tokens and passwords its clients send; jobs with `--no-network` have a loopback of
  their own and may listen there);
- the kernel keyrings (per uid, so shared by every job of every workspace, and outliving them);
- io_uring (its IORING_OP_LISTEN would listen without `listen`, and it is a large attack
  surface of its own);
- `ptrace` and `process_vm_readv/writev`: a process a job left in a warm runtime must not read
  the runtime's memory (later jobs' arguments);
- new user namespaces, mounts, `setns`, `bpf`, `perf_event_open`, `userfaultfd`, module and
  kexec calls: kernel attack surface a job has no use for (Docker's default profile denies the
  same). `clone3` answers ENOSYS, so C libraries fall back to `clone`, whose flags we can check.
Written by hand (a dozen instructions) rather than with libseccomp: no native dependency.
"""

from __future__ import annotations

import errno
import functools
import platform
import struct

# seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
_NR, _ARCH, _ARG0_LOW = 0, 4, 16
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW = 0x7FFF0000
_KILL = 0x80000000  # SECCOMP_RET_KILL_PROCESS: a foreign ABI (x32, i386) is never expected
CLONE_NEWUSER = 0x10000000

# (audit arch, syscall numbers by name) for the machines we run on.
_ABIS: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (0xC000003E, {
        "listen": 50, "clone": 56, "clone3": 435, "unshare": 272, "setns": 308,
        "mount": 165, "umount2": 166, "pivot_root": 155, "move_mount": 429, "open_tree": 428,
        "fsopen": 430, "fsmount": 432, "keyctl": 250, "add_key": 248, "request_key": 249,
        "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "init_module": 175,
        "finit_module": 313, "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311,
    }),
    "aarch64": (0xC00000B7, {
        "listen": 201, "clone": 220, "clone3": 435, "unshare": 97, "setns": 268,
        "mount": 40, "umount2": 39, "pivot_root": 41, "move_mount": 429, "open_tree": 428,
        "fsopen": 430, "fsmount": 432, "keyctl": 219, "add_key": 217, "request_key": 218,
        "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "init_module": 105,
        "finit_module": 273, "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271,
    }),
}
DENIED = ("unshare", "setns", "mount", "umount2", "pivot_root", "move_mount", "open_tree",
          "fsopen", "fsmount", "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
          "userfaultfd", "init_module", "finit_module", "delete_module", "kexec_load",
          "kexec_file_load", "io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace",
          "process_vm_readv", "process_vm_writev")


class UnsupportedMachine(RuntimeError):
    """Raised when no syscall table is known for this CPU (the sandbox then runs without it)."""


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


@functools.cache
def program(*, allow_listen: bool, machine: str | None = None) -> bytes:
    """The filter as bytes (struct sock_filter[]), what bwrap reads from its --seccomp fd."""
    machine = machine or platform.machine()
    if machine not in _ABIS:
        raise UnsupportedMachine(f"no seccomp syscall table for {machine}")
    arch, nr = _ABIS[machine]
    eperm, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    denied = [nr[name] for name in DENIED] + ([] if allow_listen else [nr["listen"]])
    # Instructions with symbolic jump targets ("next" = fall through), resolved to offsets below.
    prog: list[tuple[int, str, str, int]] = [
        (_LD_W_ABS, "", "", _ARCH),
        (_JEQ, "next", "kill", arch),  # a foreign ABI (i386 numbers differ) never gets through
        (_LD_W_ABS, "", "", _NR),
        (_JGE, "kill", "next", 0x40000000),  # x32 ABI numbers
        *[(_JEQ, "eperm", "next", number) for number in denied],
        (_JEQ, "enosys", "next", nr["clone3"]),
        (_JEQ, "next", "allow", nr["clone"]),
        (_LD_W_ABS, "", "", _ARG0_LOW),
        (_JSET, "eperm", "allow", CLONE_NEWUSER),
    ]
    labels = {"allow": len(prog), "eperm": len(prog) + 1, "enosys": len(prog) + 2,
              "kill": len(prog) + 3}

    def offset(i: int, target: str) -> int:
        return 0 if target in ("", "next") else labels[target] - i - 1

    body = [(code, offset(i, jt), offset(i, jf), k) for i, (code, jt, jf, k) in enumerate(prog)]
    body += [(_RET, 0, 0, _ALLOW), (_RET, 0, 0, eperm), (_RET, 0, 0, enosys), (_RET, 0, 0, _KILL)]
    return b"".join(_ins(*i) for i in body)
