"""Shell completion, as a user sources it."""

from __future__ import annotations

import shutil
import subprocess
import sys


def test_bash_completes_commands_and_verbs() -> None:
    shell = "bash"
    assert shutil.which(shell), "bash is part of the Debian base"
    script = subprocess.run(
        [sys.executable, "-m", "federation.cli", "completion", shell],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    probe = (
        script
        + '\nCOMP_WORDS=(fedctl pol); COMP_CWORD=1; _shtab_fedctl; echo "${COMPREPLY[@]}"'
        + "\nCOMP_WORDS=(fedctl policy ''); COMP_CWORD=2; _shtab_fedctl; echo \"${COMPREPLY[@]}\""
    )
    done = subprocess.run(
        [shell, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    first, second = done.stdout.splitlines()[-2:]
    assert first.split() == ["policy"]
    assert set(second.split()) >= {"apply", "get", "list", "delete", "diff"}


def test_zsh_completion_is_generated() -> None:
    script = subprocess.run(
        [sys.executable, "-m", "federation.cli", "completion", "zsh"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert script.startswith("#compdef fedctl")
