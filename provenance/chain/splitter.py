"""``RoyaltySplitter`` over web3.py: deploy one, read its payees and what each may withdraw."""

from __future__ import annotations

from web3 import Web3
from web3.exceptions import ContractLogicError, Web3Exception

from provenance.chain.artifacts import load_artifact
from provenance.chain.transactions import TxSender

SPLITTER = "RoyaltySplitter"


def deploy_splitter(
    sender: TxSender, payees: list[str], shares: list[int], *, timeout_s: float = 120.0
) -> tuple[str, int]:
    """Deploy a RoyaltySplitter paying ``payees`` in proportion to ``shares``; returns (address, block number)."""
    return sender.deploy(
        load_artifact(SPLITTER), [Web3.to_checksum_address(p) for p in payees], list(shares), timeout_s=timeout_s
    )


class Web3Splitter:
    """A deployed RoyaltySplitter (reads only: anyone may call ``release`` for a payee from any wallet)."""

    def __init__(self, w3: Web3, address: str) -> None:
        self.w3 = w3
        self.address = Web3.to_checksum_address(address)
        self.contract = w3.eth.contract(address=self.address, abi=load_artifact(SPLITTER)["abi"])

    def pays(self, shares: dict[str, int]) -> bool:
        """Whether this address holds a splitter with exactly these payees and shares.

        False when there is no code (a dev chain was reset, or the address is on another chain) or a
        share differs: a cached address is reused only after this check.
        """
        if not self.w3.eth.get_code(self.address):
            return False
        try:
            functions = self.contract.functions
            if int(functions.totalShares().call()) != sum(shares.values()):
                return False
            if int(functions.payeeCount().call()) != len(shares):
                return False
            return all(int(functions.shares(Web3.to_checksum_address(a)).call()) == s for a, s in shares.items())
        except (ContractLogicError, Web3Exception, ValueError):
            return False  # some other contract lives there

    def releasable(self, account: str) -> int:
        """Wei ``account`` can withdraw now."""
        return int(self.contract.functions.releasable(Web3.to_checksum_address(account)).call())

    def released(self, account: str) -> int:
        """Wei already paid out to ``account``."""
        return int(self.contract.functions.released(Web3.to_checksum_address(account)).call())
