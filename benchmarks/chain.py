"""``make bench-chain``: gas per image, one transaction per image versus Merkle batches.

Runs on a private anvil. For each batch size the registry anchors one root whose leaves document
is the real one the service publishes; gas per image is the transaction's gas divided by the
batch size. Target: at most 1,000 gas per image at 1,024 images per batch. Also reports what a
proof check costs on chain (``isRegistered`` with a proof, as NFT minting runs it).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from eth_account import Account

from provenance.anchoring.anchor import leaves_document
from provenance.anchoring.merkle import MerkleTree
from provenance.chain.anvil import AnvilNode
from provenance.chain.artifacts import load_artifact
from provenance.chain.registry import REGISTRY, Web3Registry, connect
from provenance.chain.transactions import TxSender
from provenance.ipfs.unixfs import compute_cid

TARGET_AT_1024 = 1_000


def run(batch_sizes: list[int], singles: int) -> dict[int, float]:
    with tempfile.TemporaryDirectory(prefix="provenance-bench-chain-") as tmp:
        node = AnvilNode(Path(tmp))
        url = node.start()
        try:
            w3 = connect(url)
            account = Account.create()
            w3.provider.make_request("anvil_setBalance", [account.address, hex(10**22)])  # type: ignore[arg-type]
            sender = TxSender(w3, account)
            address, _ = sender.deploy(load_artifact(REGISTRY), account.address, account.address)  # owner, writer
            registry = Web3Registry(w3, address, account, rpc_url=url, sender=sender)

            cid = compute_cid(os.urandom(300_000))
            single_gas = []
            for _ in range(singles):
                tx = registry.submit(os.urandom(32).hex(), cid)
                single_gas.append(int(w3.eth.wait_for_transaction_receipt(tx)["gasUsed"]))  # type: ignore[arg-type]
            single = sum(single_gas) / len(single_gas)
            print(f"one transaction per image: {single:,.0f} gas per image (mean of {singles})")
            print(
                f"{'batch size':>10} {'tx gas':>10} {'gas / image':>12} {'proof length':>13} {'isRegistered gas':>17}"
            )
            per_image: dict[int, float] = {1: single}
            for size in batch_sizes:
                hashes = [os.urandom(32) for _ in range(size)]
                tree = MerkleTree.build(hashes)
                leaves_cid = compute_cid(leaves_document(tree, [h.hex() for h in hashes]))
                tx = registry.submit_batch("0x" + tree.root.hex(), leaves_cid, size)
                gas = int(w3.eth.wait_for_transaction_receipt(tx)["gasUsed"])  # type: ignore[arg-type]
                proof = tree.proof(hashes[0])
                check = registry.contract.functions.isRegistered(hashes[0], tree.root, proof)
                assert check.call()
                check_gas = int(check.estimate_gas()) - 21_000  # the call itself, as part of a mint
                per_image[size] = gas / size
                print(f"{size:>10} {gas:>10,} {gas / size:>12,.1f} {len(proof):>13} {check_gas:>17,}")
        finally:
            node.stop()
    verdict = "ok" if per_image.get(1024, 0) <= TARGET_AT_1024 else "OVER"
    if 1024 in per_image:
        print(f"\ntarget: at most {TARGET_AT_1024:,} gas per image at 1024 -> {per_image[1024]:,.1f}  {verdict}")
    return per_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 256, 1024])
    parser.add_argument("--singles", type=int, default=16)
    args = parser.parse_args()
    run(args.sizes, args.singles)


if __name__ == "__main__":
    main()
