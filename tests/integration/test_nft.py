"""NFT minting: custodial mints, EIP-712 vouchers redeemed from another wallet, batched proofs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from provenance.config import Settings
from provenance.errors import InvalidAddressError
from provenance.nft.service import checked_address
from provenance.runtime.services import Services
from tests.conftest import encode, photo, wait_for
from tests.integration.test_batches import small_images

# EIP-55's own example, and the same address with one letter's case flipped (a checksum that fails).
CHECKSUMMED = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
MISTYPED = "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def certified_record(client: TestClient, data: bytes) -> dict:
    body = client.post("/v1/certify", files={"file": ("w.png", data)}).json()
    wait_for(lambda: client.get(f"/v1/records/{body['record_id']}").json()["status"] == "registered")
    return body


def selector(signature: str) -> str:
    return Web3.keccak(text=signature)[:4].hex()


def funded_wallet(services: Services):  # type: ignore[no-untyped-def]
    wallet = Account.create()
    services.chain.registry.w3.provider.make_request("anvil_setBalance", [wallet.address, hex(10**20)])  # type: ignore[arg-type]
    return wallet


def redeem(services: Services, wallet, voucher: dict):  # type: ignore[no-untyped-def]
    """The holder's side: build, sign and send ``redeem`` from their own wallet (they pay the gas)."""
    w3 = services.chain.registry.w3
    contract = w3.eth.contract(address=voucher["redeem"]["contract"], abi=services.chain.nft.abi)
    message = voucher["message"]
    call = contract.functions.redeem(
        (
            bytes.fromhex(message["contentHash"][2:]),
            message["metadataCid"],
            message["to"],
            int(message["nonce"]),
            int(message["expiry"]),
        ),
        bytes.fromhex(voucher["signature"][2:]),
        bytes.fromhex(voucher["redeem"]["root"][2:]),
        [bytes.fromhex(p[2:]) for p in voucher["redeem"]["proof"]],
    )
    call.call({"from": wallet.address})  # raises the contract's custom error if it would revert
    tx = call.build_transaction({"from": wallet.address, "nonce": w3.eth.get_transaction_count(wallet.address)})
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(wallet.sign_transaction(tx).raw_transaction)
    )
    assert receipt["status"] == 1
    return receipt


def test_custodial_mint(client: TestClient, services: Services) -> None:
    record = certified_record(client, encode(photo("chelsea.png")))
    owner = Account.create().address
    response = client.post("/v1/nft/mint", json={"record_id": record["record_id"], "to": owner})
    assert response.status_code == 201, response.text
    minted = response.json()
    nft = services.chain.nft
    assert minted["token_id"] == "0x" + record["sha256"] and minted["owner"] == owner
    assert nft.owner_of(int(record["sha256"], 16)) == owner
    assert minted["token_uri"].startswith("ipfs://") and nft.token_uri(int(record["sha256"], 16)) == minted["token_uri"]
    metadata = json.loads(client.get(f"/ipfs/{minted['token_uri'].removeprefix('ipfs://')}").content)
    assert metadata["image"] == f"ipfs://{record['cid']}"
    traits = {a["trait_type"]: a["value"] for a in metadata["attributes"]}
    assert traits["sha256"] == record["sha256"] and traits["record_id"] == record["record_id"]
    receiver, amount = nft.contract.functions.royaltyInfo(int(record["sha256"], 16), 10_000).call()
    assert amount == 500 and receiver == services.chain.admin.address  # royalties go to the owner, not the hot key
    for interface in ("0x80ac58cd", "0x2a55205a", "0x49064906"):  # ERC-721, ERC-2981, ERC-4906
        assert nft.contract.functions.supportsInterface(bytes.fromhex(interface[2:])).call()
    chain = client.get("/v1/chain").json()
    assert chain["nft_address"] == nft.address and any(f.get("name") == "redeem" for f in chain["nft_abi"])

    again = client.post("/v1/nft/mint", json={"record_id": record["record_id"], "to": owner})
    assert again.status_code == 409 and again.json()["error"] == "already_minted"


def test_concurrent_mints_of_one_record_give_one_token_and_409s(client: TestClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    record = certified_record(client, encode(photo("astronaut.png")))
    owners = [Account.create().address for _ in range(6)]

    def mint(owner: str) -> tuple[int, str]:
        response = client.post("/v1/nft/mint", json={"record_id": record["record_id"], "to": owner})
        return response.status_code, response.json().get("error", "")

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(mint, owners))
    assert sorted(status for status, _ in results) == [201, 409, 409, 409, 409, 409], results
    assert all(error == "already_minted" for status, error in results if status == 409)


@pytest.mark.parametrize(
    "body,status,code",
    [
        ({"record_id": "nope", "to": "0x" + "11" * 20}, 404, "not_found"),
        ({"record_id": "nope", "to": "0x" + "AB" * 20}, 404, "not_found"),  # all uppercase: no checksum to check
        ({"record_id": "nope", "to": "0x1234"}, 422, "validation_error"),
        ({"record_id": "nope", "to": "vitalik"}, 422, "validation_error"),
        # Mixed case is an EIP-55 checksum; this one has a letter's case flipped: a mistyped address.
        ({"record_id": "nope", "to": MISTYPED}, 422, "validation_error"),
        ({"record_id": "nope", "to": "0x" + "00" * 20}, 422, "validation_error"),  # the zero address
    ],
)
def test_mint_errors(client: TestClient, body: dict, status: int, code: str) -> None:
    for path in ("/v1/nft/mint", "/v1/nft/vouchers"):
        response = client.post(path, json=body)
        assert response.status_code == status and response.json()["error"] == code, response.text
        if status == 422:  # the answer names the field
            assert [d["loc"] for d in response.json()["detail"]] == [["body", "to"]], response.text


def test_contract_refuses_unregistered_content(services: Services) -> None:
    nft = services.chain.nft
    with pytest.raises((ContractCustomError, ContractLogicError)) as info:
        nft.contract.functions.mint(nft.sender.address, b"\x42" * 32, "bafkreiabc", bytes(32), []).call(
            {"from": nft.sender.address}
        )
    assert selector("NotRegistered(bytes32)") in str(info.value)


def test_voucher_is_redeemed_by_the_holder_once(client: TestClient, services: Services) -> None:
    record = certified_record(client, encode(photo("coffee.png")[:300, :300]))
    holder, stranger = funded_wallet(services), funded_wallet(services)
    response = client.post("/v1/nft/vouchers", json={"record_id": record["record_id"], "to": holder.address})
    assert response.status_code == 201, response.text
    voucher = response.json()
    domain = voucher["domain"]
    assert domain["name"] == "ProvenanceNFT" and domain["version"] == "1" and domain["chainId"] == 31337
    assert domain["verifyingContract"] == services.chain.nft.address
    assert len(bytes.fromhex(voucher["signature"][2:])) == 65 and voucher["primaryType"] == "MintVoucher"

    with pytest.raises((ContractCustomError, ContractLogicError)) as info:
        redeem(services, stranger, voucher)  # only the named holder may redeem
    assert selector("NotVoucherHolder(address,address)") in str(info.value)

    holder_balance = services.chain.registry.w3.eth.get_balance(holder.address)
    redeem(services, holder, voucher)
    assert services.chain.nft.owner_of(int(record["sha256"], 16)) == holder.address
    assert services.chain.registry.w3.eth.get_balance(holder.address) < holder_balance, "the holder paid the gas"
    with pytest.raises((ContractCustomError, ContractLogicError)) as info:
        redeem(services, holder, voucher)
    assert selector("VoucherUsed(uint256)") in str(info.value)
    assert (
        client.post("/v1/nft/vouchers", json={"record_id": record["record_id"], "to": holder.address}).json()["error"]
        == "already_minted"
    )


def test_expired_and_forged_vouchers_are_refused(client: TestClient, services: Services) -> None:
    record = certified_record(client, encode(photo("rocket.jpg")[:300, :300]))
    holder = funded_wallet(services)
    voucher = client.post(
        "/v1/nft/vouchers", json={"record_id": record["record_id"], "to": holder.address, "ttl_s": 60}
    ).json()
    forged = dict(voucher)
    forger = Account.create()
    forged["signature"] = services.chain.nft.sign_voucher(
        forger,
        {
            **voucher["message"],
            "contentHash": bytes.fromhex(voucher["message"]["contentHash"][2:]),
            "nonce": int(voucher["message"]["nonce"]),
        },
    )
    with pytest.raises((ContractCustomError, ContractLogicError)) as info:
        redeem(services, holder, forged)
    assert selector("InvalidSigner(address)") in str(info.value)
    w3 = services.chain.registry.w3
    w3.provider.make_request("evm_increaseTime", [120])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    with pytest.raises((ContractCustomError, ContractLogicError)) as info:
        redeem(services, holder, voucher)
    assert selector("VoucherExpired(uint256)") in str(info.value)


def test_batched_records_mint_with_their_proof(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", anchor_mode="batch", batch_max_items=4, batch_max_seconds=60)
    services = Services.open(settings, start_worker=False)
    try:
        records = [services.certifier.certify(d).record for d in small_images(3, seed=9)]
        owner = Account.create().address
        with pytest.raises(Exception, match="not yet registered"):
            services.nft.mint(records[0].id, owner)
        services.anchorer.run_once(force_batch=True)
        stored = services.repository.get(records[1].id)
        assert stored.batch_root and stored.merkle_proof
        result = services.nft.mint(records[1].id, owner)
        assert services.chain.nft.owner_of(int(records[1].sha256, 16)) == owner and result.tx_hash
    finally:
        services.close()


def test_cli_mint(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(encode(photo("coffee.png")))
    cli = [sys.executable, "-m", "provenance.cli"]
    out = subprocess.run(
        [*cli, "certify", "a.png", "--source-type", "digitalCapture", "--data-dir", "d", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    record_id = json.loads(out.stdout)["record_id"]
    owner = Account.create().address
    minted = subprocess.run(
        [*cli, "mint", record_id, "--to", owner, "--data-dir", "d"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert minted.returncode == 0, minted.stderr
    assert f"to {owner}" in minted.stdout
    again = subprocess.run(
        [*cli, "mint", record_id, "--to", owner, "--data-dir", "d"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2 and again.stderr.startswith("error:") and "already minted" in again.stderr
    for bad, reason in (
        (MISTYPED, "EIP-55"),
        ("0x" + "00" * 20, "zero address"),
        ("0x1234", "not an Ethereum address"),
    ):
        refused = subprocess.run(
            [*cli, "mint", record_id, "--to", bad, "--data-dir", "d"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith("error: --to") and reason in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr


def test_checked_address_rule() -> None:
    """EIP-55: lowercase and uppercase carry no checksum and pass; mixed case must be the right checksum."""
    assert checked_address(CHECKSUMMED) == CHECKSUMMED
    assert checked_address(CHECKSUMMED.lower()) == CHECKSUMMED
    assert checked_address("0x" + CHECKSUMMED[2:].upper()) == CHECKSUMMED
    with pytest.raises(InvalidAddressError, match="EIP-55"):
        checked_address(MISTYPED, "to")
    with pytest.raises(InvalidAddressError, match="zero address"):
        checked_address("0x" + "0" * 40)
    for bad in ("", "0x", "0X" + CHECKSUMMED[2:], CHECKSUMMED + "00", " " + CHECKSUMMED, "0x" + "g" * 40):
        with pytest.raises(InvalidAddressError, match=r"^to: "):
            checked_address(bad)


def test_voucher_to_a_lowercase_address_names_the_checksummed_one(client: TestClient) -> None:
    record = client.post("/v1/certify", files={"file": ("v.png", encode(photo("chelsea.png")[:200, :200]))}).json()
    wait_for(lambda: client.get(f"/v1/records/{record['record_id']}").json()["status"] == "registered")
    holder = Account.create().address
    response = client.post("/v1/nft/vouchers", json={"record_id": record["record_id"], "to": holder.lower()})
    assert response.status_code == 201, response.text
    assert response.json()["message"]["to"] == holder
