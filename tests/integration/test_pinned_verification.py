"""Pinned verification that trusts no single RPC, and a trust document that lists what is on chain.

Real anvils only: the shared stack's node, and forks of it (``anvil --fork-url``) that share its
history up to the fork block and then go their own way, as a forked or lying RPC would. On a fork
the attacker impersonates the registry's owner (``anvil_impersonateAccount``, which any dev RPC
takes) and publishes their own key, anchor and writer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from web3 import Web3

from provenance.api.app import create_app
from provenance.chain.anvil import AnvilNode, find_anvil, free_port, rpc_alive
from provenance.chain.artifacts import load_artifact
from provenance.chain.devchain import DEV_CHAIN_WARNING, is_development_chain
from provenance.chain.reader import CrossCheckedReader, RpcDisagreement
from provenance.chain.registry import REGISTRY
from provenance.config import Settings
from provenance.db.models import Record
from provenance.errors import ChainError, InputError
from provenance.ipfs.unixfs import compute_cid
from provenance.manifests.manifest import ManifestContent, ManifestSigner
from provenance.manifests.pki import load_or_create
from provenance.runtime.services import Services
from provenance.signing import KeyStore, sha256_hex
from provenance.trust.document import TrustDocument, TrustRoot, certificate_fingerprint, split_certificates
from provenance.verify.bundle import build_bundle, verify_with_bundle
from tests.conftest import encode, photo, wait_for
from tests.integration.test_trust import certify_registered

CLI = [sys.executable, "-m", "provenance.cli"]


@contextmanager
def fork_of(url: str) -> Iterator[str]:
    """An anvil forked from ``url`` at its latest block, on 127.0.0.1; stopped (by its pid) afterwards."""
    port = free_port()
    process = subprocess.Popen(
        [str(find_anvil()), "--host", "127.0.0.1", "--port", str(port), "--fork-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    fork_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is not None or rpc_alive(fork_url, timeout=0.5), timeout=60)
        assert process.poll() is None, "the forked anvil exited"
        yield fork_url
    finally:
        process.terminate()
        process.wait(timeout=10)


def rpc(url: str, method: str, params: list[Any]) -> Any:
    return Web3(Web3.HTTPProvider(url)).provider.make_request(method, params)  # type: ignore[arg-type]


def as_owner(url: str, registry_address: str) -> tuple[Web3, Any, str]:
    """What anyone who reaches a dev RPC can do: send as the registry's owner, without its key."""
    w3 = Web3(Web3.HTTPProvider(url))
    contract = w3.eth.contract(address=Web3.to_checksum_address(registry_address), abi=load_artifact(REGISTRY)["abi"])
    owner = contract.functions.owner().call()
    rpc(url, "anvil_impersonateAccount", [owner])
    rpc(url, "anvil_setBalance", [owner, hex(10**21)])
    return w3, contract, owner


def send(w3: Web3, function: Any, sender: str) -> int:
    receipt = w3.eth.wait_for_transaction_receipt(function.transact({"from": sender}))
    assert receipt["status"] == 1
    return int(receipt["blockNumber"])


def stranger_bundle_on(url: str, registry_address: str, tmp_path: Path) -> tuple[bytes, dict[str, Any]]:
    """A stranger's photo made 'authentic' on ``url`` by impersonating the owner of the real registry."""
    w3, contract, owner = as_owner(url, registry_address)
    ecdsa = KeyStore(tmp_path / "stranger-keys").active()
    c2pa = load_or_create(tmp_path / "stranger-ca")
    stranger = Account.create().address
    rpc(url, "anvil_impersonateAccount", [stranger])
    rpc(url, "anvil_setBalance", [stranger, hex(10**21)])
    send(w3, contract.functions.publishKey(bytes.fromhex(ecdsa.key_id)), owner)
    for cert in split_certificates(c2pa.trust_anchors_pem):
        send(w3, contract.functions.addTrustAnchor(bytes.fromhex(certificate_fingerprint(cert))), owner)
    send(w3, contract.functions.setWriter(stranger, True), owner)
    record_id = "5e" * 16
    signed = ManifestSigner(c2pa).sign(
        encode(photo("rocket.jpg")), "image/png", ManifestContent(record_id=record_id, title="a stranger's")
    )
    block = send(w3, contract.functions.register(bytes.fromhex(sha256_hex(signed)), compute_cid(signed)), stranger)
    record = Record(
        id=record_id,
        sha256=sha256_hex(signed),
        cid=compute_cid(signed),
        signature=ecdsa.sign(signed),
        key_id=ecdsa.key_id,
        media_type="image/png",
        watermark_id=None,
        tx_hash=None,
        block_number=block,
    )
    bundle = build_bundle(
        record,
        public_key_pem=ecdsa.public_key_pem,
        credentials=c2pa,
        chain_id=31337,
        registry_address=registry_address,
        batch=None,
    )
    return signed, json.loads(json.dumps(bundle))


def run_verify(image: bytes, bundle: dict[str, Any], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    image_path, bundle_path = tmp_path / "image.png", tmp_path / "bundle.json"
    image_path.write_bytes(image)
    bundle_path.write_text(json.dumps(bundle))
    command = [*CLI, "verify", str(image_path), "--bundle", str(bundle_path), *args]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_a_forked_rpc_is_caught_by_a_second_endpoint(client: TestClient, services: Services, tmp_path: Path) -> None:
    registry = services.chain.registry
    real, address = registry.rpc_url, registry.address
    pin = TrustRoot.of(address, 31337)
    _, data, bundle = certify_registered(client, "chelsea.png")
    with fork_of(real) as forked:
        stranger_data, stranger = stranger_bundle_on(forked, address, tmp_path)

        # The threat: one RPC, forked and rewritten in the owner's name, makes a stranger's photo authentic.
        fooled = verify_with_bundle(stranger_data, stranger, forked, pin=pin)
        assert fooled.verdict == "authentic", fooled.reasons
        assert any(DEV_CHAIN_WARNING in r for r in fooled.reasons), "the verdict names the dev chain"

        # A second, independent endpoint: the real chain has other blocks after the fork point.
        while int(rpc(real, "eth_blockNumber", [])["result"], 16) < int(
            rpc(forked, "eth_blockNumber", [])["result"], 16
        ):
            rpc(real, "evm_mine", [])
        for image, claimed in ((stranger_data, stranger), (data, bundle)):
            report = verify_with_bundle(image, claimed, [real, forked], pin=pin)
            assert report.verdict == "untrusted" and report.exit_code == 1
            first = report.reasons[0]
            assert "disagree" in first and "hash of block" in first and real in first and forked in first
            assert report.checks["rpc"]["ok"] is False and report.checks["rpc"]["agree"] is False

        cli = run_verify(stranger_data, stranger, tmp_path, "--rpc", real, "--rpc", forked, "--registry", address)
        assert cli.returncode == 1 and "untrusted" in cli.stdout and "disagree" in cli.stdout, cli.stdout + cli.stderr
        as_json = run_verify(
            stranger_data, stranger, tmp_path, "--rpc", forked, "--rpc", real, "--registry", address, "--json"
        )
        assert as_json.returncode == 1 and json.loads(as_json.stdout)["verdict"] == "untrusted"

    # The fork is gone: an endpoint that fails next to one that answers is a disagreement too...
    report = verify_with_bundle(data, bundle, [real, forked], pin=pin)
    assert report.verdict == "untrusted" and forked in report.reasons[0] and "failed" in report.reasons[0]
    # ...while no endpoint at all answering is an error, not a verdict (the CLI exits 2).
    with pytest.raises(ChainError):
        verify_with_bundle(data, bundle, [forked], pin=pin)
    dead = run_verify(data, bundle, tmp_path, "--rpc", forked, "--registry", address)
    assert dead.returncode == 2 and dead.stderr.startswith("error:") and "Traceback" not in dead.stderr


def test_two_endpoints_of_one_chain_agree(client: TestClient, services: Services, tmp_path: Path) -> None:
    registry = services.chain.registry
    real, address = registry.rpc_url, registry.address
    _, data, bundle = certify_registered(client, "coffee.png")
    with fork_of(real) as same_chain:  # unchanged: the same blocks as the real node up to its latest
        report = verify_with_bundle(data, bundle, [real, same_chain, real], pin=TrustRoot.of(address, 31337))
        assert report.verdict == "authentic", report.reasons
        assert report.checks["rpc"]["ok"] and report.checks["rpc"]["endpoints"] == [real, same_chain]
        assert report.checks["trust"]["development_chain"] is True
        assert report.reasons == [f"chain 31337 is {DEV_CHAIN_WARNING}; a public deployment needs a real chain"]

        cli = run_verify(data, bundle, tmp_path, "--rpc", real, "--rpc", same_chain, "--registry", address, "--json")
        assert cli.returncode == 0, cli.stdout + cli.stderr
        out = json.loads(cli.stdout)
        assert out["verdict"] == "authentic" and any(DEV_CHAIN_WARNING in r for r in out["reasons"])


def test_confirmations_beyond_the_registration_block(client: TestClient, services: Services, tmp_path: Path) -> None:
    registry = services.chain.registry
    address = registry.address
    _, data, bundle = certify_registered(client, "astronaut.png")
    registered_at = int(bundle["chain"]["block_number"])
    pin = TrustRoot.of(address, 31337)
    # A fork stays at its fork block (nothing else mines on it), so `latest` does not move under the test.
    with fork_of(registry.rpc_url) as still:
        for _ in range(3):
            rpc(still, "evm_mine", [])
        latest = int(rpc(still, "eth_blockNumber", [])["result"], 16)
        enough = latest - registered_at
        confirmed = verify_with_bundle(data, bundle, still, pin=pin, confirmations=enough)
        assert confirmed.verdict == "authentic" and confirmed.checks["rpc"]["block"] == registered_at

        early = verify_with_bundle(data, bundle, still, pin=pin, confirmations=enough + 1)
        assert early.verdict == "untrusted" and early.checks["chain"]["not_yet_registered"]
        assert early.checks["rpc"]["block"] == registered_at - 1
        assert any(
            "not yet registered at block" in r and f"bundle says block {registered_at}" in r for r in early.reasons
        )

        cli = run_verify(
            data, bundle, tmp_path, "--rpc", still, "--registry", address, "--confirmations", str(enough + 1)
        )
        assert cli.returncode == 1 and "not yet registered" in cli.stdout, cli.stdout + cli.stderr
        bad = run_verify(data, bundle, tmp_path, "--rpc", still, "--registry", address, "--confirmations", "-1")
        assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_cross_checked_reader_reads_one_block(services: Services) -> None:
    registry = services.chain.registry
    reader = CrossCheckedReader([registry.rpc_url], registry.address, confirmations=10**9)
    assert reader.pin() == 0 and not reader.has_code()  # more confirmations than blocks: block 0, nothing there
    reader = CrossCheckedReader(registry.rpc_url, registry.address)
    block = reader.pin()
    assert reader.owner() == registry.owner() and reader.chain_id() == 31337 and reader.block == block
    reader.confirm()
    with pytest.raises(InputError, match="No chain RPC"):
        CrossCheckedReader([], registry.address)
    with pytest.raises(InputError, match="0 or more"):
        CrossCheckedReader(registry.rpc_url, registry.address, confirmations=-1)
    assert issubclass(RpcDisagreement, ChainError)
    assert is_development_chain(31337) and is_development_chain(1337)
    assert not is_development_chain(1) and not is_development_chain(11155111) and not is_development_chain(None)


@pytest.fixture(scope="module")
def rogue_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """A stack of its own whose registry gets entries the service never published."""
    opened = Services.open(Settings(data_dir=tmp_path_factory.mktemp("rogue")), start_worker=False)
    yield opened
    opened.close()


def test_trust_document_lists_what_is_on_chain_and_flags_strangers(rogue_stack: Services, tmp_path: Path) -> None:
    services = rogue_stack
    registry = services.chain.registry
    with TestClient(create_app(services=services)) as local:
        clean = TrustDocument.from_json(local.get("/.well-known/provenance-trust.json").content)
    assert all(k.published_by_service for k in clean.signing_keys)
    assert all(a.published_by_service and a.published for a in clean.c2pa_trust_anchors)
    assert [w.address for w in clean.writer_history] == clean.writers == [registry.sender.address]  # type: ignore[union-attr]
    assert clean.warnings == [f"chain 31337 is {DEV_CHAIN_WARNING}; a public deployment needs a real chain"]

    # Someone who reaches the dev RPC acts as the owner: a key, an anchor and a writer the service never published.
    w3, contract, owner = as_owner(registry.rpc_url, registry.address)
    rogue_key, rogue_anchor, gone_anchor = "ab" * 32, "cd" * 32, "ef" * 32
    rogue_writer = Account.create().address
    send(w3, contract.functions.publishKey(bytes.fromhex(rogue_key)), owner)
    send(w3, contract.functions.addTrustAnchor(bytes.fromhex(rogue_anchor)), owner)
    send(w3, contract.functions.addTrustAnchor(bytes.fromhex(gone_anchor)), owner)
    send(w3, contract.functions.removeTrustAnchor(bytes.fromhex(gone_anchor)), owner)
    since = send(w3, contract.functions.setWriter(rogue_writer, True), owner)

    with TestClient(create_app(services=services)) as local:
        raw = local.get("/.well-known/provenance-trust.json").content
    doc = TrustDocument.from_json(raw)
    assert doc.pin() == clean.pin() and TrustDocument.from_json(doc.to_json()) == doc
    keys = {k.key_id: k for k in doc.signing_keys}
    assert not keys[rogue_key].published_by_service and keys[rogue_key].published
    assert keys[rogue_key].public_key_pem is None and keys[rogue_key].valid_from_block is not None
    assert keys[services.keys.active().key_id].published_by_service
    anchors = {a.sha256: a for a in doc.c2pa_trust_anchors}
    assert anchors[rogue_anchor].published and not anchors[rogue_anchor].published_by_service
    assert not anchors[gone_anchor].published and not anchors[gone_anchor].published_by_service
    writers = {w.address: w for w in doc.writer_history}
    assert rogue_writer in doc.writers and writers[rogue_writer].allowed
    assert not writers[rogue_writer].published_by_service
    assert [(r.since, r.until) for r in writers[rogue_writer].ranges] == [(since, None)]
    assert writers[registry.sender.address].published_by_service  # type: ignore[union-attr]
    for flagged in (rogue_key, rogue_anchor, rogue_writer):
        assert any(flagged in w for w in doc.warnings), flagged
    assert not any(gone_anchor in w for w in doc.warnings), "a removed anchor vouches for nothing now"
    assert json.loads(raw)["warnings"] == doc.warnings

    # The export says the same, and prints each warning on standard error.
    out = tmp_path / "trust.json"
    data_dir = str(services.settings.resolved_data_dir)
    exported = subprocess.run(
        [*CLI, "trust", "export", "--data-dir", data_dir, "-o", str(out)], capture_output=True, text=True, timeout=120
    )
    assert exported.returncode == 0, exported.stderr
    from_file = TrustDocument.from_file(out)
    assert {k.key_id for k in from_file.signing_keys if not k.published_by_service} == {rogue_key}
    assert rogue_writer in exported.stderr and rogue_anchor in exported.stderr and "warning:" in exported.stderr


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on ``port`` (IPv4 and IPv6), from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(host)
    return found


def test_embedded_anvil_listens_on_loopback_only(tmp_path: Path) -> None:
    node = AnvilNode(tmp_path / "chain")
    url = node.start()
    try:
        port = int(url.rsplit(":", 1)[1])
        assert listening_addresses(port) == {"0100007F"}, "127.0.0.1 in /proc/net/tcp, nothing else"
        assert node._command(port)[1:3] == ["--host", "127.0.0.1"]
    finally:
        node.stop()
