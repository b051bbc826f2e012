"""Issue #18 end to end: a dataset, a base model and a LoRA trained on it carry their provenance to an image.

One stack (SQLite, anvil, blockstore, C2PA) with PROVENANCE_REQUIRE_REGISTERED_MODELS on, driven through its
public faces: the operator's CLI (``datasets register``, ``models register``, ``generate``) and the HTTP API
(trainings, generations, verify, dataset proofs, keys, mint). The flow: 16 packaged photos registered as a
dataset with a creator; the tiny base model refused until registered, then registered with a creator; a LoRA
trained on CPU for two steps at 64 px, signed and registered on chain by the training job; an image generated
with it whose C2PA manifest names model, LoRA and dataset; verify checks every link; a one-byte change to the
LoRA is refused (422) under the setting and a broken link without it; membership proofs against the root on
chain; model-signing's own verifier with the published key; and the royalty of a sale split as registered.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from model_signing import verifying

from provenance.anchoring.merkle import verify_proof
from provenance.api.app import create_app
from provenance.chain.splitter import Web3Splitter
from provenance.config import Settings
from provenance.db.models import JobStatus
from provenance.lineage.common import dataset_key
from provenance.lineage.training import read_lineage
from provenance.runtime.services import Services
from tests.conftest import encode, wait_for
from tests.integration.test_datasets import tiles
from tests.integration.test_lineage import _ingredients
from tests.integration.test_nft import funded_wallet
from tests.integration.test_royalties import pay, release

CLI = [sys.executable, "-m", "provenance.cli"]
SMALL = {"steps": 2, "width": 64, "height": 64}
DATASET_CREATOR, BASE_CREATOR = Account.create().address, Account.create().address
DATASET_BPS, BASE_BPS = 5000, 1500


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """The embedded stack with PROVENANCE_REQUIRE_REGISTERED_MODELS on."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("lineage-e2e"), anchor_poll_interval_s=0.05, require_registered_models=True
    )
    opened = Services.open(settings)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def api(strict: Services) -> Iterator[TestClient]:
    """The API as the operator of the strict stack."""
    admin_key = (strict.settings.resolved_data_dir / "admin.key").read_text().strip()
    with TestClient(create_app(services=strict)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {admin_key}"
        yield test_client


def cli(strict: Services, *args: str, require: bool = True) -> subprocess.CompletedProcess[str]:
    """The operator's command line on the same data directory (a second process on the same stack)."""
    env = {**os.environ, "PROVENANCE_REQUIRE_REGISTERED_MODELS": "true" if require else "false"}
    data_dir = str(strict.settings.resolved_data_dir)
    return subprocess.run([*CLI, *args, "--data-dir", data_dir], capture_output=True, text=True, timeout=300, env=env)


def finished(api: TestClient, url: str) -> dict[str, Any]:
    """Poll a job's status URL until it finishes; its last state."""
    return wait_for(lambda: (job := api.get(url).json())["status"] in JobStatus.FINISHED and job, timeout=240)


def registered_record(api: TestClient, record_id: str) -> None:
    wait_for(lambda: api.get(f"/v1/records/{record_id}").json()["status"] == "registered", timeout=60)


@pytest.fixture(scope="module")
def flow(strict: Services, api: TestClient, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Steps 1 to 4: dataset, base model, LoRA, and one image generated with the LoRA."""
    folder = tmp_path_factory.mktemp("photos")
    captions = []
    for n, rgb in enumerate(tiles()):  # 16 distinct 512x512 crops of scikit-image's photos
        (folder / f"p{n:02d}.png").write_bytes(encode(rgb))
        captions.append(json.dumps({"file": f"p{n:02d}.png", "caption": f"a photo, part {n}"}))
    (folder / "captions.jsonl").write_text("\n".join(captions) + "\n")

    # 1. The dataset, with its creator; --pin so API training runs read its stored copies.
    done = cli(
        strict, "datasets", "register", str(folder), "--name", "photos", "--license", "CC-BY-4.0",
        "--creator", f"{DATASET_CREATOR}:{DATASET_BPS}:Ana", "--pin", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    dataset = json.loads(done.stdout)
    assert dataset["status"] == "registered" and dataset["items"] == 16

    # 2. The base model: refused while unregistered (the request also writes the built-in tiny model's folder).
    refused = api.post("/v1/generations", json={"prompt": "a lighthouse", **SMALL})
    assert refused.status_code == 422 and refused.json()["error"] == "unregistered_model", refused.text
    assert "tiny-random" in refused.json()["detail"]
    tiny = strict.settings.resolved_data_dir / "models" / "tiny-random"
    done = cli(
        strict, "models", "register", str(tiny), "--name", "tiny-random", "--kind", "base",
        "--creator", f"{BASE_CREATOR}:{BASE_BPS}:Ben", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    base = json.loads(done.stdout)
    assert base["status"] == "registered" and base["signature_cid"]

    # 3. A LoRA trained on the dataset by a job (scope train): signed, registered on chain by the job.
    body = {"dataset_id": dataset["dataset_id"], "name": "photo-style", "rank": 4, "steps": 2, "lr": 5e-3,
            "resolution": 64, "seed": 7}  # fmt: skip
    accepted = api.post("/v1/trainings", json=body)
    assert accepted.status_code == 202, accepted.text
    training = finished(api, accepted.json()["status_url"])
    assert training["status"] == "succeeded" and training["step"] == 2, training
    lora_path = strict.settings.resolved_lora_dir / training["lora_file"]
    lora = wait_for(
        lambda: (m := api.get(f"/v1/models/{training['model_id']}").json())["status"] == "registered" and m, 60
    )

    # 4. An image generated with the LoRA through the API (the gate lets registered models through).
    accepted = api.post(
        "/v1/generations",
        json={"prompt": "a lighthouse", "seed": 5, "loras": [{"path": training["lora_file"], "weight": 0.8}], **SMALL},
    )
    assert accepted.status_code == 202, accepted.text
    job = finished(api, accepted.json()["status_url"])
    assert job["status"] == "succeeded", job
    record_id = job["records"][0]["record_id"]
    registered_record(api, record_id)
    image = api.get(f"/v1/records/{record_id}/image").content
    return {
        "folder": folder, "dataset": dataset, "base": base, "training": training, "lora": lora,
        "lora_path": lora_path, "record_id": record_id, "image": image,
    }  # fmt: skip


def test_the_lora_knows_its_dataset_and_base(flow: dict[str, Any]) -> None:
    lora, dataset, base = flow["lora"], flow["dataset"], flow["base"]
    assert lora["kind"] == "lora" and lora["signature_cid"] and lora["block_number"] is not None
    assert (lora["dataset_id"], lora["training_id"]) == (dataset["dataset_id"], flow["training"]["training_id"])
    meta = read_lineage(flow["lora_path"])
    assert (meta["dataset_id"], meta["dataset_root"]) == (dataset["dataset_id"], dataset["root"])
    assert meta["base_model_digest"] == base["digest"] and meta["params"]["resolution"] == 64


def test_the_manifest_lists_model_lora_and_dataset(strict: Services, flow: dict[str, Any]) -> None:
    ingredients = _ingredients(strict, flow["image"])  # read by c2pa-python
    kinds = [(i["relationship"], i["data_types"][0]["type"]) for i in ingredients]
    assert kinds == [
        ("inputTo", "c2pa.types.model.pytorch"),
        ("inputTo", "c2pa.types.model.pytorch"),
        ("inputTo", "c2pa.types.dataset"),
    ]
    base, lora, dataset = (i["metadata"]["org.provenance.lineage"] for i in ingredients)
    assert (base["model_id"], base["digest"]) == (flow["base"]["model_id"], flow["base"]["digest"])
    assert (lora["model_id"], lora["digest"], lora["weight"]) == (flow["lora"]["model_id"], flow["lora"]["digest"], 0.8)
    assert (dataset["dataset_id"], dataset["root"]) == (flow["dataset"]["dataset_id"], flow["dataset"]["root"])


def test_verify_shows_the_lineage_with_every_link_checked(api: TestClient, flow: dict[str, Any]) -> None:
    report = api.post("/v1/verify", files={"file": ("g.png", flow["image"])}).json()
    assert report["verdict"] == "authentic" and report["record_id"] == flow["record_id"]
    lineage = report["lineage"]
    assert lineage["status"] == "verified", lineage
    links = {link["kind"]: link for link in lineage["links"]}
    assert [link["kind"] for link in lineage["links"]] == ["base", "lora", "dataset"]
    assert links["base"]["model_id"] == flow["base"]["model_id"]
    assert links["lora"]["model_id"] == flow["lora"]["model_id"] and links["lora"]["weight"] == 0.8
    assert links["dataset"]["dataset_id"] == flow["dataset"]["dataset_id"]
    for link in lineage["links"]:
        assert link["status"] == "verified" and link["registered_on_chain"] is True, link
        assert link["hash_matches"] is not False and link["block_number"] is not None, link
    assert links["base"]["signature_valid"] and links["lora"]["signature_valid"]
    assert links["base"]["hash_matches"] and links["lora"]["hash_matches"]
    assert "signature verifies" in links["lora"]["reason"]
    assert "signature" not in links["dataset"]["reason"]  # a dataset link checks no signature: it claims none
    # The record page's lineage (GET /v1/records/{id}/lineage) is the same report, checked now.
    assert api.get(f"/v1/records/{flow['record_id']}/lineage").json() == lineage


def test_a_one_byte_change_to_the_lora_is_refused_or_a_broken_link(
    strict: Services, api: TestClient, flow: dict[str, Any], tmp_path: Path
) -> None:
    changed = strict.settings.resolved_lora_dir / "changed.safetensors"
    raw = bytearray(flow["lora_path"].read_bytes())
    raw[-1] ^= 0x01  # one byte of the last tensor's data
    changed.write_bytes(bytes(raw))
    body = {"prompt": "a lighthouse", "seed": 9, "loras": [{"path": "changed.safetensors", "weight": 0.8}], **SMALL}
    refused = api.post("/v1/generations", json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "unregistered_model" and "changed.safetensors" in refused.json()["detail"]

    # The same stack with the setting off (the operator's CLI, its own process): generated, certified, and
    # verify shows the LoRA as a broken link while the image's own verdict stands.
    done = cli(
        strict, "generate", "a lighthouse", "--seed", "9", "--steps", "2", "--width", "64", "--height", "64",
        "--lora", f"{changed}:0.8", "-o", str(tmp_path), require=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [made] = tmp_path.glob("*.png")
    report = api.post("/v1/verify", files={"file": ("g.png", made.read_bytes())}).json()
    assert report["verdict"] == "authentic" and report["record_id"] == made.stem
    lineage = report["lineage"]
    assert lineage["status"] == "broken"
    base, lora = lineage["links"]  # an unknown LoRA leads to no dataset
    assert base["status"] == "verified" and base["model_id"] == flow["base"]["model_id"]
    assert lora["status"] == "broken" and lora["model_id"] is None
    assert "matches no registered model" in lora["reason"]


def test_membership_proof_checks_against_the_root_on_chain(
    strict: Services, api: TestClient, flow: dict[str, Any]
) -> None:
    dataset = flow["dataset"]
    sha = hashlib.sha256((flow["folder"] / "p05.png").read_bytes()).hexdigest()
    answer = api.get(f"/v1/datasets/{dataset['dataset_id']}/proof", params={"sha256": sha})
    assert answer.status_code == 200, answer.text
    proof = answer.json()
    assert proof["valid"] and proof["on_chain"] and proof["path"] == "p05.png" and proof["root"] == dataset["root"]
    entry = strict.chain.registry.lookup(dataset_key(dataset["root"]))  # the root as the chain has it
    assert entry.registered and entry.cid == dataset["manifest_cid"]
    root = bytes.fromhex(dataset["root"][2:])
    assert verify_proof(bytes.fromhex(proof["item_hash"]), [bytes.fromhex(p[2:]) for p in proof["proof"]], root)

    outsider = hashlib.sha256(flow["image"]).hexdigest()  # the generated image was not in the data
    missing = api.get(f"/v1/datasets/{dataset['dataset_id']}/proof", params={"sha256": outsider})
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_model_signings_own_verifier_accepts_the_lora(api: TestClient, flow: dict[str, Any], tmp_path: Path) -> None:
    keys = api.get("/v1/keys").json()["signing_keys"]
    (tmp_path / "key.pub").write_text(next(k["public_key_pem"] for k in keys if k["active"]))
    bundle = api.get(f"/ipfs/{flow['lora']['signature_cid']}")
    assert bundle.status_code == 200
    (tmp_path / "model.sig").write_bytes(bundle.content)
    verifying.Config().use_elliptic_key_verifier(public_key=tmp_path / "key.pub").verify(
        flow["lora_path"], tmp_path / "model.sig"
    )


def test_royalties_split_as_registered(strict: Services, api: TestClient, flow: dict[str, Any]) -> None:
    owner = Account.create().address
    minted = api.post("/v1/nft/mint", json={"record_id": flow["record_id"], "to": owner})
    assert minted.status_code == 201, minted.text
    splitter = minted.json()["royalty_receiver"]
    assert splitter

    assert strict.chain.admin is not None and strict.chain.nft is not None
    certifier = strict.chain.admin.address  # the default receiver, who gets the rest of 10,000
    shares = {DATASET_CREATOR: DATASET_BPS, BASE_CREATOR: BASE_BPS, certifier: 10_000 - DATASET_BPS - BASE_BPS}
    split = Web3Splitter(strict.chain.registry.w3, splitter)
    assert split.pays(shares)
    token_id = int(api.get(f"/v1/records/{flow['record_id']}").json()["sha256"], 16)
    receiver, royalty = strict.chain.nft.contract.functions.royaltyInfo(token_id, 10**18).call()
    assert receiver == splitter and royalty > 0

    marketplace, stranger = funded_wallet(strict), funded_wallet(strict)
    pay(strict, marketplace, splitter, royalty)
    w3 = strict.chain.registry.w3
    for account, bps in shares.items():
        due = royalty * bps // 10_000
        before = w3.eth.get_balance(account)
        release(strict, stranger, splitter, account)  # anyone may send it; the payee gets the ETH
        assert w3.eth.get_balance(account) - before == due and split.released(account) == due
