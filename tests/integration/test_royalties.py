"""Royalties for the creators of an image's lineage: a RoyaltySplitter as the token's ERC-2981 receiver, on anvil."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from provenance.chain.splitter import Web3Splitter
from provenance.db.models import Dataset, Record, RegisteredModel
from provenance.lineage.common import Creator
from provenance.lineage.royalties import CACHE_FILE, lineage_sources, split_royalty
from provenance.runtime.services import Services
from tests.integration.test_batches import small_images
from tests.integration.test_nft import certified_record, funded_wallet, redeem, selector

ROYALTY_BPS = 500  # the NFT's configured default rate (Settings.nft_royalty_bps)


def _id() -> str:
    return secrets.token_hex(16)


def add_dataset(services: Services, creators: list[dict[str, Any]]) -> str:
    """A dataset row as the datasets service leaves it (only what royalties read matters here)."""
    dataset_id = _id()
    with services.sessions.begin() as session:
        session.add(
            Dataset(
                id=dataset_id,
                name="artists' pictures",
                root="0x" + secrets.token_hex(32),
                item_count=16,
                manifest_cid="bafkreidataset",
                manifest_sha256=secrets.token_hex(32),
                creators=creators,
            )
        )
    return dataset_id


def add_model(services: Services, creators: list[dict[str, Any]], *, dataset_id: str | None = None) -> str:
    """A registered LoRA row trained on ``dataset_id``."""
    model_id = _id()
    with services.sessions.begin() as session:
        session.add(
            RegisteredModel(
                id=model_id,
                name="style-lora",
                kind="lora",
                digest=secrets.token_hex(32),
                files=[],
                signature="{}",
                dataset_id=dataset_id,
                creators=creators,
            )
        )
    return model_id


def set_lineage(services: Services, record_id: str, lineage: dict[str, Any]) -> None:
    """What the generator stores for an image made with these models (``record.generation["lineage"]``)."""
    with services.sessions.begin() as session:
        record = session.get(Record, record_id)
        assert record is not None
        record.generation = {**(record.generation or {}), "lineage": lineage}


def lora_lineage(model_id: str, dataset_id: str | None) -> dict[str, Any]:
    lora = {"model_id": model_id, "name": "style-lora", "digest": "ab" * 32, "weight": 0.8, "dataset_id": dataset_id}
    return {"base": {"model_id": None, "name": "tiny", "digest": "cd" * 32}, "loras": [lora]}


def w3_of(services: Services) -> Web3:
    return services.chain.registry.w3


def pay(services: Services, payer: Any, to: str, wei: int) -> None:
    """A marketplace paying the royalty of a sale: a plain ETH transfer to the receiver."""
    w3 = w3_of(services)
    tx = {
        "to": to,
        "value": wei,
        "gas": 100_000,
        "gasPrice": w3.eth.gas_price,
        "nonce": w3.eth.get_transaction_count(payer.address),
        "chainId": w3.eth.chain_id,
    }
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(payer.sign_transaction(tx).raw_transaction)
    )
    assert receipt["status"] == 1


def release(services: Services, caller: Any, splitter: str, account: str) -> None:
    """``release(account)`` sent by ``caller`` (anyone may; the ETH goes to ``account``, who pays no gas here)."""
    w3 = w3_of(services)
    contract = Web3Splitter(w3, splitter).contract
    call = contract.functions.release(account)
    call.call({"from": caller.address})  # raises the contract's custom error if it would revert
    tx = call.build_transaction({"from": caller.address, "nonce": w3.eth.get_transaction_count(caller.address)})
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(caller.sign_transaction(tx).raw_transaction)
    )
    assert receipt["status"] == 1


@pytest.fixture(scope="module")
def creators() -> dict[str, str]:
    return {"A": Account.create().address, "B": Account.create().address}


@pytest.fixture(scope="module")
def lineage(services: Services, creators: dict[str, str]) -> dict[str, Any]:
    """A dataset whose creator A holds 60%, and a LoRA trained on it whose creator B holds 20%."""
    dataset_id = add_dataset(services, [{"address": creators["A"], "bps": 6000, "name": "Ana"}])
    model_id = add_model(services, [{"address": creators["B"], "bps": 2000, "name": "Ben"}], dataset_id=dataset_id)
    return lora_lineage(model_id, dataset_id)


def test_a_sale_is_withdrawn_by_each_creator_and_the_certifier_in_their_share(
    client: TestClient, services: Services, creators: dict[str, str], lineage: dict[str, Any]
) -> None:
    record = certified_record(client, small_images(1, seed=1801)[0])
    set_lineage(services, record["record_id"], lineage)
    owner = Account.create().address
    response = client.post("/v1/nft/mint", json={"record_id": record["record_id"], "to": owner})
    assert response.status_code == 201, response.text
    splitter = response.json()["royalty_receiver"]
    assert splitter and Web3.is_checksum_address(splitter)

    nft, w3 = services.chain.nft, w3_of(services)
    token_id = int(record["sha256"], 16)
    sale_price = 20 * 10**18 + 140  # a sale whose royalty does not divide evenly
    receiver, royalty = nft.contract.functions.royaltyInfo(token_id, sale_price).call()
    assert receiver == splitter and royalty == sale_price * ROYALTY_BPS // 10_000 == 10**18 + 7  # the rate stays

    certifier = services.chain.admin.address  # the default receiver: the contracts' owner
    payees = {creators["A"]: 6000, creators["B"]: 2000, certifier: 2000}
    split = Web3Splitter(w3, splitter)
    assert split.pays(payees)

    marketplace, stranger = funded_wallet(services), funded_wallet(services)
    pay(services, marketplace, splitter, royalty)
    # floor(received * shares / 10000): 0.6 * 7 wei = 4.2 -> 4; 0.2 * 7 = 1.4 -> 1; the 1 wei left stays in.
    expected = {creators["A"]: 6 * 10**17 + 4, creators["B"]: 2 * 10**17 + 1, certifier: 2 * 10**17 + 1}
    assert {a: split.releasable(a) for a in payees} == expected
    for account, due in expected.items():
        before = w3.eth.get_balance(account)
        release(services, stranger, splitter, account)  # the stranger pays the gas, the payee gets the ETH
        assert w3.eth.get_balance(account) - before == due
        assert split.released(account) == due and split.releasable(account) == 0
    assert w3.eth.get_balance(splitter) == 1  # the rounding dust, paid out as later payments arrive

    for account in payees:  # nobody withdraws twice
        with pytest.raises((ContractCustomError, ContractLogicError)) as info:
            release(services, stranger, splitter, account)
        assert selector("NothingDue(address)") in str(info.value)
    with pytest.raises((ContractCustomError, ContractLogicError)) as info:
        release(services, stranger, splitter, stranger.address)
    assert selector("NotPayee(address)") in str(info.value)

    # A second sale of 3 wei: with the dust, 4 wei are due, each payee's total is floor(total received * share).
    pay(services, marketplace, splitter, 3)
    total = royalty + 3
    assert {a: split.releasable(a) for a in payees} == {a: total * s // 10_000 - expected[a] for a, s in payees.items()}
    assert {a: split.releasable(a) for a in payees} == {creators["A"]: 2, creators["B"]: 1, certifier: 1}
    assert sum(split.releasable(a) for a in payees) == 4 == w3.eth.get_balance(splitter)
    release(services, stranger, splitter, creators["A"])
    assert split.released(creators["A"]) == total * 6000 // 10_000

    # Once minted, the hot key cannot redirect the token's royalties.
    with pytest.raises((ContractCustomError, ContractLogicError)) as info:
        nft.contract.functions.setTokenRoyaltyReceiver(token_id, stranger.address).call({"from": nft.sender.address})
    assert selector("RoyaltyReceiverLocked(uint256)") in str(info.value)
    with pytest.raises((ContractCustomError, ContractLogicError)) as info:
        nft.contract.functions.setTokenRoyaltyReceiver(token_id + 1, stranger.address).call({"from": stranger.address})
    assert selector("NotMinter(address)") in str(info.value)


def test_one_splitter_per_split_and_vouchers_carry_it(
    client: TestClient, services: Services, creators: dict[str, str], lineage: dict[str, Any]
) -> None:
    first, second, other = small_images(3, seed=1802)
    minted = []
    for data in (first, second):
        record = certified_record(client, data)
        set_lineage(services, record["record_id"], lineage)
        minted.append(client.post("/v1/nft/mint", json={"record_id": record["record_id"], "to": creators["A"]}).json())
    assert minted[0]["royalty_receiver"] == minted[1]["royalty_receiver"], "the same split reuses its splitter"
    cache = json.loads((services.settings.resolved_data_dir / CACHE_FILE).read_text())
    assert minted[0]["royalty_receiver"] in cache[f"chain:{w3_of(services).eth.chain_id}"].values()

    # Another LoRA on the same dataset, by another creator: another split, another splitter; the voucher names it.
    c = Account.create().address
    model_id = add_model(services, [{"address": c, "bps": 1000}], dataset_id=lineage["loras"][0]["dataset_id"])
    record = certified_record(client, other)
    set_lineage(services, record["record_id"], lora_lineage(model_id, None))  # the dataset comes from the model row
    holder = funded_wallet(services)
    voucher = client.post("/v1/nft/vouchers", json={"record_id": record["record_id"], "to": holder.address}).json()
    splitter = voucher["royalty_receiver"]
    assert splitter and splitter != minted[0]["royalty_receiver"]
    redeem(services, holder, voucher)
    receiver, _ = services.chain.nft.contract.functions.royaltyInfo(int(record["sha256"], 16), 10_000).call()
    assert receiver == splitter
    assert Web3Splitter(w3_of(services), splitter).pays(
        {creators["A"]: 6000, c: 1000, services.chain.admin.address: 3000}
    )


def test_a_record_without_lineage_keeps_the_default_receiver(client: TestClient, services: Services) -> None:
    plain, unknown = small_images(2, seed=1803)
    for data, lineage in ((plain, None), (unknown, lora_lineage("no-such-model", "no-such-dataset"))):
        record = certified_record(client, data)
        if lineage is not None:
            set_lineage(services, record["record_id"], lineage)
        minted = client.post("/v1/nft/mint", json={"record_id": record["record_id"], "to": Account.create().address})
        assert minted.status_code == 201 and minted.json()["royalty_receiver"] is None, minted.text
        receiver, amount = services.chain.nft.contract.functions.royaltyInfo(int(record["sha256"], 16), 10_000).call()
        assert receiver == services.chain.admin.address and amount == ROYALTY_BPS


def test_split_rule() -> None:
    a, b, cert = (Account.create().address for _ in range(3))
    assert split_royalty([], cert) is None
    # Duplicates merge; the certifier gets the rest of 100%.
    split = split_royalty(
        [Creator(address=a, bps=3000), Creator(address=b, bps=2000), Creator(address=a, bps=1000)], cert
    )
    assert split is not None and split.shares == {a: 4000, b: 2000, cert: 4000} and split.total_shares == 10_000
    # The certifier named as a creator is one payee; the split does not depend on the order of mention.
    merged = split_royalty([Creator(address=cert, bps=500), Creator(address=b, bps=2000)], cert)
    reordered = split_royalty([Creator(address=b, bps=2000), Creator(address=cert, bps=500)], cert)
    assert merged is not None and reordered is not None
    assert merged.shares == {b: 2000, cert: 8000} and merged.key == reordered.key
    # Several sources asking for 100% or more together: in proportion, nothing left for the certifier.
    over = split_royalty([Creator(address=a, bps=9000), Creator(address=b, bps=3000)], cert)
    assert over is not None and over.shares == {a: 9000, b: 3000} and over.total_shares == 12_000
    assert lineage_sources(None) == ([], [])
    assert lineage_sources({"base": {"model_id": "m1"}, "loras": [{"model_id": "m2", "dataset_id": "d"}] * 2}) == (
        ["m1", "m2"],
        ["d"],
    )
