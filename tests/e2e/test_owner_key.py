"""The documented ownership transfer, step by step with the CLI, and what the data dir does after it.

docs/trust-model.md ("Keys and owners"): ``provenance chain transfer-ownership 0xCOLD``,
``provenance chain accept-ownership --key-file cold.key``, ``shred -u data/chain/owner.key``. After that no
command creates a new owner key; the commands that need the owner fail in one line (exit 2), the others run
without a word about owners; with ``CHAIN_OWNER_KEY_FILE`` pointing at the cold key the owner's commands work again.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from eth_account import Account

from tests.conftest import encode, photo

CLI = [sys.executable, "-m", "provenance.cli"]


def _env(**extra: str) -> dict[str, str]:
    """This environment without any provenance or chain setting: the embedded default in ./data."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVENANCE_", "CHAIN_")) and k != "RPC_URL"}
    return {**env, **extra}


def run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=_env(**env))


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.startswith("error:") and result.stderr.strip().count("\n") == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_the_readme_ownership_transfer_end_to_end(tmp_path: Path) -> None:
    chain = tmp_path / "data" / "chain"
    (tmp_path / "a.png").write_bytes(encode(photo("astronaut.png")))
    cold_hex = "0x" + secrets.token_hex(32)
    (tmp_path / "cold.key").write_text(cold_hex + "\n")
    cold = Account.from_key(cold_hex).address

    # First start of the data dir: the only time chain keys are created.
    first = run(tmp_path, "chain", "info")
    assert first.returncode == 0, first.stderr
    owner_key, operator_key = chain / "owner.key", chain / "operator.key"
    assert owner_key.exists() and operator_key.exists()
    assert oct(owner_key.stat().st_mode & 0o777) == "0o600"
    first_owner = json.loads(first.stdout)["owner"]
    assert first_owner == Account.from_key(owner_key.read_text().strip()).address
    operator_before = operator_key.read_bytes()

    # The three documented steps.
    step1 = run(tmp_path, "chain", "transfer-ownership", cold)
    assert step1.returncode == 0, step1.stderr
    assert "pending owner" in step1.stdout
    step2 = run(tmp_path, "chain", "accept-ownership", "--key-file", "cold.key")
    assert step2.returncode == 0, step2.stderr
    assert f"{cold} owns the contracts now" in step2.stdout
    subprocess.run(["shred", "-u", "data/chain/owner.key"], cwd=tmp_path, check=True)
    assert not owner_key.exists()

    # Reading commands run quietly, and nothing creates a new owner key.
    info = run(tmp_path, "chain", "info")
    assert info.returncode == 0, info.stderr
    assert info.stderr == ""
    body = json.loads(info.stdout)
    assert body["owner"] == cold and body["pending_owner"] in (None, "0x" + "00" * 20)
    assert body["owner_key_available"] is False
    certified = run(tmp_path, "certify", "a.png", "-o", "out", "--json")
    assert certified.returncode == 0, certified.stderr
    assert "owner" not in certified.stderr.lower() and "warning" not in certified.stderr.lower(), certified.stderr
    verified = run(tmp_path, "verify", "out/a.certified.png", "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["verdict"] == "authentic"
    assert "owner" not in verified.stderr.lower() and "warning" not in verified.stderr.lower(), verified.stderr
    assert not owner_key.exists()
    assert operator_key.read_bytes() == operator_before  # the hot key is the same one

    # Commands that need the owner say so in one line.
    new_writer = Account.create().address
    for args in (
        ("chain", "set-writer", new_writer, "--allow"),
        ("chain", "set-minter", new_writer, "--allow"),
        ("chain", "transfer-ownership", new_writer),
        ("keys", "rotate"),
    ):
        message = one_line_error(run(tmp_path, *args))
        assert "owner key" in message, (args, message)
    assert not owner_key.exists()

    # The new owner's key, named by the setting, does them.
    allowed = run(tmp_path, "chain", "set-writer", new_writer, "--allow", CHAIN_OWNER_KEY_FILE="cold.key")
    assert allowed.returncode == 0, allowed.stderr
    assert f"writer {new_writer} allowed" in allowed.stdout
    assert not owner_key.exists()


def test_a_missing_operator_key_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    assert run(tmp_path, "chain", "info").returncode == 0
    operator_key = tmp_path / "data" / "chain" / "operator.key"
    operator_key.unlink()
    message = one_line_error(run(tmp_path, "chain", "info"))
    assert "operator key" in message and "CHAIN_KEY_FILE" in message
    assert not operator_key.exists()
