"""An install that deploys: the wheel holds everything the service reads, and serves from a fresh venv.

The project is built into a wheel from a copy of the working tree (what git tracks or would track, as
`COPY` with `.dockerignore` sees it), installed non-editably into a new virtual environment, and
`provenance serve` is run from there, in a folder outside the checkout, with its own data dir. Its
dependencies are the ones already installed in the project's .venv, made visible through a ``.pth``
line (a plain path: the .venv's own ``.pth`` files, among them the editable install of this
checkout, are not processed), so nothing is downloaded: pip runs with ``--no-index``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from provenance.chain.anvil import NPM_ANVIL
from tests.conftest import _free_port, encode, photo, wait_for

ROOT = Path(__file__).resolve().parents[2]
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])


def _tree_files() -> list[str]:
    """Files git tracks or would track (not ignored) that exist in the working tree."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sorted({name for name in listed.split("\0") if name and (ROOT / name).is_file()})


def _copy_tree(dest: Path) -> None:
    for name in _tree_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / name).read_bytes())


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without this checkout's venv or any provenance setting."""
    settings = {"DATABASE_URL", "IPFS_API_URL", "RPC_URL", "REDIS_URL", "REGISTRY_ADDRESS", "NFT_ADDRESS"}
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PROVENANCE_", "CHAIN_", "PYTHON")) and key not in settings | {"VIRTUAL_ENV"}
    }
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(venv, wheel): the project built from a copy of the tree and installed into a fresh venv."""
    base = tmp_path_factory.mktemp("install")
    source, wheels, venv = base / "src", base / "wheels", base / "venv"
    _copy_tree(source)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies (and pip, setuptools) come from the project's venv, after the new venv's own packages.
    (Path(purelib) / "_provenance_deps.pth").write_text(f"{SITE_PACKAGES}\n")
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(source)]
    subprocess.run(build, check=True, capture_output=True, cwd=base)
    (wheel,) = wheels.glob("provenance-*.whl")
    # --ignore-installed: the editable install of this checkout is visible through the .pth; never touch it.
    install = [*pip, "install", "--no-deps", "--no-index", "--ignore-installed", str(wheel)]
    subprocess.run(install, check=True, capture_output=True, cwd=base)
    yield venv, wheel


def test_the_wheel_holds_migrations_artifacts_and_static_files(installed: tuple[Path, Path]) -> None:
    _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {
        f"provenance/db/migrations/versions/{p.name}" for p in (ROOT / "provenance/db/migrations/versions").glob("*.py")
    }
    assert len(migrations) >= 5 and migrations <= names
    assert {"provenance/db/migrations/env.py", "provenance/db/migrations/script.py.mako"} <= names
    assert {
        "provenance/chain/compiled/ProvenanceRegistry.json",
        "provenance/chain/compiled/ProvenanceNFT.json",
    } <= names
    static = {f"provenance/web/static/{p.name}" for p in (ROOT / "provenance/web/static").iterdir() if p.is_file()}
    assert static <= names
    # Nothing from outside the package: no tests, no contracts sources, no data.
    assert not any(name.startswith(("tests/", "contracts/", "data/", "alembic/")) for name in names)


def test_the_installed_package_is_read_from_the_new_venv(installed: tuple[Path, Path], tmp_path: Path) -> None:
    venv, _ = installed
    probe = (
        "import json, provenance, importlib.metadata as md\n"
        "from alembic.script import ScriptDirectory\n"
        "from provenance.chain.artifacts import ARTIFACTS_DIR, load_artifact\n"
        "from provenance.db.session import alembic_config\n"
        "scripts = ScriptDirectory.from_config(alembic_config('sqlite://'))\n"
        "print(json.dumps({'package': provenance.__file__, 'artifacts': str(ARTIFACTS_DIR),\n"
        "  'migrations': scripts.dir, 'head': scripts.get_current_head(),\n"
        "  'abi': len(load_artifact('ProvenanceRegistry')['abi']),\n"
        "  'dist': str(md.distribution('provenance').locate_file(''))}))\n"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        cwd=tmp_path,
        env=_clean_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    found = json.loads(out.stdout)
    for key in ("package", "artifacts", "migrations", "dist"):
        path = Path(found[key]).resolve()
        assert path.is_relative_to(venv.resolve()), (key, path)
        assert not path.is_relative_to(ROOT), (key, path)
    assert found["abi"] > 0
    head = subprocess.run(
        [
            sys.executable,
            "-c",
            "from alembic.script import ScriptDirectory;"
            "from provenance.db.session import alembic_config;"
            "print(ScriptDirectory.from_config(alembic_config('sqlite://')).get_current_head())",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    assert found["head"] == head
    # The installed copies are the checkout's files, byte for byte.
    for name in ("ProvenanceRegistry.json", "ProvenanceNFT.json"):
        installed_bytes = (Path(found["artifacts"]) / name).read_bytes()
        checkout_bytes = (ROOT / "provenance/chain/compiled" / name).read_bytes()
        assert hashlib.sha256(installed_bytes).digest() == hashlib.sha256(checkout_bytes).digest()


def test_the_installed_package_finds_anvil_through_the_setting_or_path(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    """A wheel has no node_modules next to it: anvil comes from PROVENANCE_ANVIL_BINARY or PATH."""
    venv, _ = installed
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "anvil").symlink_to(NPM_ANVIL)
    probe = "from provenance.config import Settings\nfrom provenance.chain.anvil import find_anvil\n"
    probe += "print(find_anvil(Settings().anvil_binary))"

    def lookup(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin" / "python"), "-c", probe],
            cwd=tmp_path,
            env=_clean_env(**env),
            capture_output=True,
            text=True,
        )

    on_path = lookup(PATH=f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    assert Path(on_path.stdout.strip()) == bin_dir / "anvil", on_path.stderr
    # The setting wins over PATH.
    configured = lookup(PATH=f"{bin_dir}{os.pathsep}/usr/bin", PROVENANCE_ANVIL_BINARY=str(NPM_ANVIL))
    assert Path(configured.stdout.strip()) == NPM_ANVIL, configured.stderr
    # Neither: a CLI command fails in one line that names the setting, and starts nothing.
    image = tmp_path / "a.png"
    image.write_bytes(encode(photo("coffee.png")))
    data = tmp_path / "data"
    result = subprocess.run(
        [str(venv / "bin" / "provenance"), "verify", str(image), "--data-dir", str(data)],
        cwd=tmp_path,
        env=_clean_env(PATH=f"/usr/bin{os.pathsep}/bin"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "PROVENANCE_ANVIL_BINARY" in result.stderr and "PATH" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (data / "chain" / "anvil.json").exists()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_serve_certify_and_verify_from_the_installed_package(installed: tuple[Path, Path], tmp_path: Path) -> None:
    venv, _ = installed
    workdir = tmp_path / "elsewhere"  # outside the checkout: no ./node_modules, no ./provenance
    workdir.mkdir()
    data = tmp_path / "data"
    port = _free_port()
    env = _clean_env(PROVENANCE_ANVIL_BINARY=str(NPM_ANVIL), PROVENANCE_ANCHOR_POLL_INTERVAL_S="0.05")
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(venv / "bin" / "provenance"), "serve", "--data-dir", str(data), "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    anvil_pid: int | None = None
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert server.poll() is None, log_path.read_text()[-3000:]
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=120, interval=0.2)
        anvil_pid = int(json.loads((data / "chain" / "anvil.json").read_text())["pid"])
        assert _pid_alive(anvil_pid)
        # The anvil the server started is the binary the setting names.
        assert Path(os.readlink(f"/proc/{anvil_pid}/exe")).resolve() == NPM_ANVIL.resolve()

        key = (data / "admin.key").read_text().strip()
        image = encode(photo("astronaut.png"))
        response = httpx.post(
            f"{base}/v1/certify",
            headers={"Authorization": f"Bearer {key}"},
            files={"file": ("astronaut.png", image, "image/png")},
            timeout=60,
        )
        assert response.status_code == 201, response.text
        record_id = response.json()["record_id"]

        def registered() -> bool:
            return httpx.get(f"{base}/v1/records/{record_id}", timeout=10).json()["status"] == "registered"

        wait_for(registered, timeout=60, interval=0.1)
        certified = httpx.get(f"{base}/v1/records/{record_id}/image", timeout=30)
        assert certified.status_code == 200
        verdict = httpx.post(
            f"{base}/v1/verify", files={"file": ("c.png", certified.content, "image/png")}, timeout=60
        ).json()
        assert verdict["verdict"] == "authentic", verdict
        assert verdict["record_id"] == record_id

        # A clean stop stops the anvil it started.
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0, log_path.read_text()[-3000:]
        wait_for(lambda: not _pid_alive(anvil_pid), timeout=15)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if anvil_pid is not None and _pid_alive(anvil_pid):
            os.kill(anvil_pid, signal.SIGKILL)
    # The migrations created the schema in the new data dir; the log names no checkout path.
    assert (data / "provenance.db").is_file()
    assert str(ROOT / "provenance") not in log_path.read_text()
