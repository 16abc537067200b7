"""The seccomp program's shape; what it refuses is tested on real processes in test_sandbox.py."""

from __future__ import annotations

import struct

import pytest

from services.worker import seccomp


@pytest.mark.parametrize("machine", sorted(seccomp._ABIS))
@pytest.mark.parametrize("allow_listen", [True, False])
def test_every_jump_lands_inside_the_program_and_it_ends_in_returns(
    machine: str, allow_listen: bool,
) -> None:
    raw = seccomp.program(allow_listen=allow_listen, machine=machine)
    prog = [struct.unpack("=HBBI", raw[i:i + 8]) for i in range(0, len(raw), 8)]
    for i, (code, jt, jf, _) in enumerate(prog):
        if code & 0x07 == 0x05:  # BPF_JMP
            assert i + 1 + max(jt, jf) < len(prog)
    assert [code for code, *_ in prog[-4:]] == [0x06] * 4
    listen = seccomp._ABIS[machine][1]["listen"]
    refused = {k for code, jt, _, k in prog if code == 0x15 and jt and k != seccomp._ABIS[machine][0]}
    assert (listen in refused) is not allow_listen
    assert {seccomp._ABIS[machine][1][n] for n in seccomp.DENIED} <= refused


def test_an_unknown_machine_is_a_typed_error() -> None:
    with pytest.raises(seccomp.UnsupportedMachine):
        seccomp.program(allow_listen=False, machine="sparc")
