"""The ``provenance`` command line, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import encode, photo

CLI = [sys.executable, "-m", "provenance.cli"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_certify_many_then_verify(tmp_path: Path) -> None:
    for name, fmt in (("a.png", "PNG"), ("b.jpg", "JPEG"), ("c.webp", "WEBP")):
        (tmp_path / name).write_bytes(encode(photo("coffee.png" if fmt != "PNG" else "astronaut.png"), fmt))
    result = run("certify", "a.png", "b.jpg", "c.webp", "--data-dir", "d", "-o", "out", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(chunk) for chunk in result.stdout.replace("}\n{", "}\x00{").split("\x00")]
    assert [Path(r["certified"]).name for r in lines] == ["a.certified.png", "b.certified.jpg", "c.certified.webp"]
    assert all(r["status"] == "registered" and r["tx_hash"] for r in lines)

    report = run("verify", "out/b.certified.jpg", "--data-dir", "d", "--json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    body = json.loads(report.stdout)
    assert body["verdict"] == "authentic" and body["record_id"] == lines[1]["record_id"]

    readable = run("verify", "b.jpg", "--data-dir", "d", cwd=tmp_path)
    assert readable.returncode == 1 and "verdict: unknown" in readable.stdout  # 0 only for authentic

    keys = run("keys", "--data-dir", "d", cwd=tmp_path)
    assert "records signed: 3" in keys.stdout and "BEGIN PUBLIC KEY" in keys.stdout and "PRIVATE" not in keys.stdout


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    for args in (("verify", "missing.png"), ("certify", "notes.txt"), ("verify", "notes.txt")):
        result = run(*args, "--data-dir", "d", cwd=tmp_path)
        assert result.returncode != 0
        assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error:"), result.stderr
        assert "Traceback" not in result.stderr


def test_exit_codes_follow_the_documented_contract(tmp_path: Path) -> None:
    """2 for bad usage or input, 1 for a failure that is not the caller's, never a traceback."""
    usage = run("verify", cwd=tmp_path)  # missing argument
    assert usage.returncode == 2 and "Missing argument" in usage.stderr and "Traceback" not in usage.stderr
    unknown = run("certify", "--no-such-option", cwd=tmp_path)
    assert unknown.returncode == 2 and "No such option" in unknown.stderr

    (tmp_path / "a.png").write_bytes(encode(photo("astronaut.png")))
    # A chain node that refuses connections (nothing listens on port 9 of this host): a one-line error, exit 2
    # at start (the configured RPC is unusable), no half-written output.
    env_dead_chain = {"RPC_URL": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"}
    dead = subprocess.run(
        [*CLI, "certify", "a.png", "--data-dir", "d", "-o", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env_dead_chain,
    )
    assert dead.returncode == 2, dead.stderr
    assert dead.stderr.startswith("error:") and dead.stderr.strip().count("\n") == 0, dead.stderr
    assert "127.0.0.1:9" in dead.stderr and "Traceback" not in dead.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
