"""Datasets: registration with hygiene, a signed manifest, the Merkle root on anvil, proofs, near matches, verify."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from provenance.anchoring.merkle import verify_proof
from provenance.db.models import Dataset
from provenance.lineage.common import dataset_key
from provenance.lineage.datasets import DatasetChangedError, DatasetService, verify_manifest
from provenance.runtime.services import Services
from tests.conftest import SKIMAGE_DATA, encode, wait_for

CLI = [sys.executable, "-m", "provenance.cli"]
SOURCES = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg"]
EXIF_PAYLOAD = b"<script>alert('exif')</script>"
CREATOR = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def tiles() -> list[np.ndarray]:
    """16 distinct 512x512 pictures: quarters and halves of scikit-image's photos, resized."""
    out: list[np.ndarray] = []
    for name in SOURCES:
        src = Image.open(SKIMAGE_DATA / name).convert("RGB")
        w, h = src.size
        for box in ((0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h)):
            out.append(np.asarray(src.crop(box).resize((512, 512), Image.Resampling.LANCZOS)))
    return out[:16]


def with_exif(rgb: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x010E] = EXIF_PAYLOAD.decode()  # ImageDescription
    exif[0x8298] = "a camera owner"  # Copyright
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=92, exif=exif.tobytes())
    return out.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 images (one JPEG with an EXIF payload), an exact duplicate, a small image, a text file, captions."""
    root = tmp_path_factory.mktemp("dataset")
    pictures = tiles()
    for n, rgb in enumerate(pictures[:15]):
        (root / f"img{n:02d}.png").write_bytes(encode(rgb))
    (root / "sub").mkdir()
    (root / "sub" / "exif.jpg").write_bytes(with_exif(pictures[15]))
    shutil.copy(root / "img00.png", root / "dup.png")
    (root / "small.png").write_bytes(encode(np.ascontiguousarray(pictures[3][:200, :300])))
    (root / "notes.txt").write_text("not an image")
    captions = [{"file": f"img{n:02d}.png", "caption": f"picture {n}", "license": "CC-BY-4.0"} for n in range(4)]
    captions.append({"file": "sub/exif.jpg", "caption": "a photo with metadata", "source": "https://example.org/p"})
    (root / "captions.jsonl").write_text("\n".join(json.dumps(c) for c in captions) + "\n")
    return root


def run_cli(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    data_dir = str(services.settings.resolved_data_dir)
    return subprocess.run([*CLI, *args, "--data-dir", data_dir], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def registered(services: Services, folder: Path) -> dict:
    """The folder registered with ``--pin`` through the CLI (the session's worker registers the root)."""
    done = run_cli(
        services, "datasets", "register", str(folder), "--name", "tiles", "--license", "CC-BY-4.0",
        "--creator", f"{CREATOR}:2500:Alice", "--pin", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def service(services: Services) -> DatasetService:
    return DatasetService(services.sessions, services.store, services.keys, services.chain.registry)


def test_register_reports_hygiene_and_registers_the_root(services: Services, registered: dict) -> None:
    assert registered["status"] == "registered" and registered["block_number"] is not None
    assert registered["items"] == 18  # 15 + exif.jpg + dup.png + small.png; notes.txt left out
    hygiene = registered["hygiene"]
    assert hygiene["not_images"] == [{"path": "notes.txt", "reason": hygiene["not_images"][0]["reason"]}]
    assert hygiene["exact_duplicates"] == [["dup.png", "img00.png"]]
    assert hygiene["small_images"] == [{"path": "small.png", "width": 300, "height": 200}]
    assert not any({"dup.png", "img00.png"} == {n["a"], n["b"]} for n in hygiene["near_duplicates"])
    assert hygiene["exif_stripped"] >= 1
    entry = services.chain.registry.lookup(dataset_key(registered["root"]))
    assert entry.registered and entry.cid == registered["manifest_cid"]
    assert entry.block_number == registered["block_number"]


def test_manifest_is_signed_and_served(client: TestClient, services: Services, registered: dict) -> None:
    body = client.get(f"/v1/datasets/{registered['dataset_id']}").json()
    manifest = body["manifest"]
    assert body["chain"]["status"] == "registered" and body["manifest_cid"] == registered["manifest_cid"]
    assert manifest["root"] == registered["root"] and manifest["license"] == "CC-BY-4.0"
    assert manifest["creators"] == [{"address": CREATOR, "bps": 2500, "name": "Alice"}]
    assert verify_manifest(manifest, services.keys.active().public_key_pem)
    forged = {**manifest, "items": manifest["items"][1:]}
    assert not verify_manifest(forged, services.keys.active().public_key_pem)
    by_path = {i["path"]: i for i in manifest["items"]}
    assert by_path["img01.png"]["caption"] == "picture 1" and by_path["img01.png"]["license"] == "CC-BY-4.0"
    assert by_path["sub/exif.jpg"]["source"] == "https://example.org/p"
    assert all(i["cid"] for i in manifest["items"])


def test_stored_copies_carry_no_exif(services: Services, registered: dict) -> None:
    items = {i.path: i for i in service(services).items(registered["dataset_id"])}
    stored = services.store.cat(str(items["sub/exif.jpg"].cid))
    assert EXIF_PAYLOAD not in stored and b"a camera owner" not in stored
    image = Image.open(io.BytesIO(stored))
    assert image.format == "PNG" and not image.getexif() and "exif" not in image.info
    training = service(services).training_items(registered["dataset_id"])
    assert len(training) == 18 and training[0].rgb.dtype == np.uint8 and training[0].rgb.shape[2] == 3
    assert {t.path: t.caption for t in training}["img02.png"] == "picture 2"


def test_membership_proof_checks_against_the_chain(
    client: TestClient, anonymous_client: TestClient, services: Services, folder: Path, registered: dict
) -> None:
    sha = hashlib.sha256((folder / "img05.png").read_bytes()).hexdigest()
    answer = anonymous_client.get(f"/v1/datasets/{registered['dataset_id']}/proof", params={"sha256": sha})
    assert answer.status_code == 200, answer.text
    proof = answer.json()
    assert proof["valid"] and proof["on_chain"] and proof["path"] == "img05.png"
    root = bytes.fromhex(proof["root"][2:])
    assert verify_proof(bytes.fromhex(proof["item_hash"]), [bytes.fromhex(p[2:]) for p in proof["proof"]], root)
    missing = anonymous_client.get(f"/v1/datasets/{registered['dataset_id']}/proof", params={"sha256": "ab" * 32})
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert anonymous_client.get("/v1/datasets/nope").json()["error"] == "not_found"

    member = run_cli(services, "datasets", "prove", str(folder / "img05.png"), "--dataset", registered["dataset_id"])
    assert member.returncode == 0, member.stderr
    assert "checks against the root on chain" in member.stdout


def test_near_finds_an_edited_copy_and_never_calls_it_a_proof(
    services: Services, folder: Path, registered: dict, tmp_path: Path
) -> None:
    edited = Image.open(folder / "img07.png").resize((384, 384), Image.Resampling.BILINEAR)
    edited.save(tmp_path / "edited.jpg", "JPEG", quality=80)
    found = run_cli(
        services, "datasets", "prove", str(tmp_path / "edited.jpg"), "--dataset", registered["dataset_id"], "--near",
        "--json",
    )  # fmt: skip
    assert found.returncode == 1, found.stderr  # not a member: no proof
    out = json.loads(found.stdout)
    assert out["member"] is False and out["proof"] is None
    assert out["near"] and out["near"][0]["path"] == "img07.png" and out["near"][0]["distance"] <= 8
    text = run_cli(services, "datasets", "prove", str(tmp_path / "edited.jpg"), "--dataset", registered["dataset_id"],
                   "--near")  # fmt: skip
    assert "not a member" in text.stdout and "near match (not a proof): img07.png" in text.stdout


def test_verify_reports_added_removed_changed(
    services: Services, folder: Path, registered: dict, tmp_path: Path
) -> None:
    same = run_cli(services, "datasets", "verify", str(folder), "--dataset", registered["dataset_id"])
    assert same.returncode == 0, same.stderr + same.stdout
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "img03.png").unlink()
    (copy / "img04.png").write_bytes((copy / "img04.png").read_bytes() + b"\0")
    (copy / "new.png").write_bytes(encode(np.zeros((64, 64, 3), np.uint8)))
    different = run_cli(services, "datasets", "verify", str(copy), "--dataset", registered["dataset_id"], "--json")
    assert different.returncode == 1, different.stderr
    assert json.loads(different.stdout) == {
        "identical": False, "added": ["new.png"], "removed": ["img03.png"], "changed": ["img04.png"],
    }  # fmt: skip


def test_unpinned_training_items_refuse_changed_files(
    services: Services, folder: Path, registered: dict, tmp_path: Path
) -> None:
    copy = tmp_path / "plain"
    shutil.copytree(folder, copy)
    datasets = service(services)
    result = datasets.register_folder(copy, name="plain")
    assert all(i.cid is None for i in datasets.items(result.dataset.id))
    assert len(datasets.training_items(result.dataset.id, copy)) == 18
    (copy / "img09.png").write_bytes(encode(np.zeros((520, 520, 3), np.uint8)))
    with pytest.raises(DatasetChangedError, match=r"img09\.png"):
        datasets.training_items(result.dataset.id, copy)
    wait_for(lambda: datasets.get(result.dataset.id).status == "registered")  # the session's worker registers it

    # The same items again: the same root, already on chain; the worker settles it without a second transaction.
    again = datasets.register_folder(folder, name="again")
    assert again.dataset.root == registered["root"] and again.dataset.manifest_cid != registered["manifest_cid"]
    wait_for(lambda: datasets.get(again.dataset.id).status == "registered")
    assert datasets.get(again.dataset.id).block_number == registered["block_number"]
    proof = datasets.prove(again.dataset.id, hashlib.sha256((folder / "img01.png").read_bytes()).hexdigest())
    assert proof is not None and proof.valid


def test_api_registers_archives_and_json_items(client: TestClient, services: Services, folder: Path) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("img00.png", "img01.png", "captions.jsonl", "notes.txt"):
            if name == "captions.jsonl":
                z.writestr(name, json.dumps({"file": "img01.png", "caption": "zipped"}) + "\n")
            else:
                z.write(folder / name, f"set/{name}" if name != "img01.png" else name)
    answer = client.post(
        "/v1/datasets", files={"file": ("set.zip", archive.getvalue())},
        data={"name": "zipped", "creators": json.dumps([{"address": CREATOR, "bps": 100}])},
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["item_count"] == 2 and body["hygiene"]["not_images"][0]["path"] == "set/notes.txt"
    wait_for(lambda: client.get(f"/v1/datasets/{body['dataset_id']}").json()["chain"]["status"] == "registered")

    items = [
        {"file": "a.jpg", "image": base64.b64encode(with_exif(tiles()[0])).decode(), "caption": "a"},
        {"file": "b.png", "image": base64.b64encode((folder / "img02.png").read_bytes()).decode()},
    ]
    answer = client.post("/v1/datasets", json={"name": "listed", "license": "CC0-1.0", "items": items})
    assert answer.status_code == 201, answer.text
    dataset_id = answer.json()["dataset_id"]
    stored = service(services).items(dataset_id)
    assert all(i.cid for i in stored) and EXIF_PAYLOAD not in services.store.cat(str(stored[0].cid))


def count_datasets(services: Services) -> int:
    with services.sessions() as session:
        return session.query(Dataset).count()


def test_bad_input_is_refused_and_nothing_is_written(
    client: TestClient, anonymous_client: TestClient, services: Services, folder: Path, tmp_path: Path
) -> None:
    before = count_datasets(services)
    empty = tmp_path / "empty"
    empty.mkdir()
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("a")
    (texts / "b.bin").write_bytes(b"\x89PNG not really")
    orphans = tmp_path / "orphans"
    shutil.copytree(folder, orphans)
    with (orphans / "captions.jsonl").open("a") as f:
        f.write(json.dumps({"file": "gone.png", "caption": "where?"}) + "\n")
    for bad, message in ((empty, "empty"), (texts, "no image"), (orphans, "gone.png")):
        done = run_cli(services, "datasets", "register", str(bad))
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    unknown = run_cli(services, "datasets", "verify", str(folder), "--dataset", "doesnotexist")
    assert unknown.returncode == 2 and "no dataset" in unknown.stderr
    assert client.post("/v1/datasets", json={"name": "x", "items": []}).json()["error"] == "bad_request"
    assert client.post("/v1/datasets", files={"file": ("x.zip", b"not an archive")}).status_code == 400
    only_text = {"file": "a.txt", "image": base64.b64encode(b"text").decode()}
    refused = client.post("/v1/datasets", json={"name": "x", "items": [only_text]})
    assert refused.status_code == 400 and "no image" in refused.json()["detail"]
    assert anonymous_client.post("/v1/datasets", json={"name": "x", "items": []}).status_code == 401
    assert count_datasets(services) == before


def test_a_dropped_transaction_is_sent_again(services: Services) -> None:
    """A row left ``submitted`` with a transaction the node never saw (a crash, a reset chain): the worker's
    lineage anchorer puts it back to pending and registers it."""
    root = "0x" + hashlib.sha256(b"a dataset whose transaction was lost").hexdigest()
    row = Dataset(
        id="lost" + "0" * 28, name="lost", root=root, item_count=1, manifest_cid=services.store.add(b"{}").cid,
        manifest_sha256="0" * 64, creators=[], status="submitted", registry_key=dataset_key(root),
        tx_hash="0x" + "ab" * 32,
    )  # fmt: skip
    with services.sessions.begin() as session:
        session.add(row)
    datasets = service(services)
    wait_for(lambda: datasets.get(row.id).status == "registered")
    registered = datasets.get(row.id)
    assert registered.tx_hash != "0x" + "ab" * 32 and registered.block_number is not None
    assert services.chain.registry.lookup(dataset_key(root)).block_number == registered.block_number
