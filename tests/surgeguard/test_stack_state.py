"""The state file of ``surgeguard up`` and what ``status`` says from it (issue 16).

Files only; a running stack's status is tested with the real ``up`` in test_cli.py."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from surgeguard.cli import stack_state
from surgeguard.cli.stack_state import Service, StackState


def _state(data_dir: Path, pid: int, token_file: str | None = None) -> StackState:
    return StackState(
        pid=pid,
        started_at=1_700_000_000.0,
        data_dir=str(data_dir),
        token_file=token_file,
        services=(
            Service("redis", "redis://127.0.0.1:1/0", 11, note="embedded"),
            Service("target", "http://127.0.0.1:1", 12, "http://127.0.0.1:1/healthz", "metrics"),
        ),
    )


def test_the_state_file_is_private_and_reads_back(tmp_path: Path) -> None:
    state = _state(tmp_path, os.getpid(), str(tmp_path / "admin-token"))
    path = stack_state.state_path(tmp_path)
    stack_state.write_private(path, state.to_json())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stack_state.read_state(tmp_path) == state


def test_status_says_clearly_that_no_stack_is_up(tmp_path: Path) -> None:
    code, text = stack_state.status(tmp_path)
    assert code == 1
    assert text.startswith("no stack is up") and str(tmp_path / "up.json") in text


def test_a_state_file_left_by_a_dead_up_is_no_stack(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stack_state.write_private(
        stack_state.state_path(tmp_path), _state(tmp_path, int(gone.stdout)).to_json()
    )
    code, text = stack_state.status(tmp_path)
    assert code == 1 and "no stack is up" in text and "which is gone" in text


def test_a_broken_state_file_is_said_in_one_line(tmp_path: Path) -> None:
    stack_state.state_path(tmp_path).write_text("{not json")
    code, text = stack_state.status(tmp_path)
    assert code == 1 and "not a surgeguard up state file" in text and "\n" not in text


def test_the_description_says_where_the_token_is_never_what_it_is(tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    text = stack_state.describe(_state(tmp_path, 1, str(token_file)), {"target": False})
    assert f"admin token kept in {token_file} (mode 0600)" in text
    assert "target      http://127.0.0.1:1   (metrics; pid 12; NOT ANSWERING)" in text
    assert "redis       redis://127.0.0.1:1/0   (embedded; pid 11)" in text
    from_env = stack_state.describe(_state(tmp_path, 1, None))
    assert "SURGEGUARD_ADMIN_TOKEN" in from_env


def test_only_the_up_that_wrote_it_removes_it(tmp_path: Path) -> None:
    token = tmp_path / "admin-token"
    token.write_text("secret\n")
    stack_state.write_private(
        stack_state.state_path(tmp_path), _state(tmp_path, 4242, str(token)).to_json()
    )
    stack_state.remove_state(tmp_path, pid=4343)
    assert stack_state.state_path(tmp_path).exists() and token.exists()
    stack_state.remove_state(tmp_path, pid=4242)
    assert not stack_state.state_path(tmp_path).exists() and not token.exists()


def test_up_hands_on_a_given_token_makes_one_or_leaves_named_operators_alone(
    tmp_path: Path,
) -> None:
    from surgeguard.cli.settings import StackSettings
    from surgeguard.cli.stack import stack_token

    given = "a-given-token-of-24-chars-x"
    assert stack_token(StackSettings(admin_token=given)) == given
    made = stack_token(StackSettings())
    assert len(made) >= 24 and made != stack_token(StackSettings())
    named = StackSettings(admin_tokens=f"alice:{given}")
    assert stack_token(named) == ""  # the controller reads them itself
    (tmp_path / "token").write_text(given)
    assert stack_token(StackSettings(admin_token_file=tmp_path / "token")) == ""
