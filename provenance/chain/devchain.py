"""Development chains: whoever reaches their RPC can rewrite them, so no verdict may rest on one silently.

anvil (and Hardhat) serve chain id 31337, Ganache and geth ``--dev`` 1337. Their RPCs take
``anvil_setCode``, ``anvil_setStorageAt``, ``anvil_impersonateAccount`` (send as the registry's owner
without its key) and the like: anyone who can reach the node can publish a key, add an anchor or
register a hash in the owner's name. Every verdict that rests on such a chain names it with
:data:`DEV_CHAIN_WARNING` (one sentence, shared by the bundle verifier and the service's verifier).
"""

from __future__ import annotations

# 31337: anvil and Hardhat; 1337: Ganache and geth --dev. Public chains never use these ids.
DEVELOPMENT_CHAIN_IDS: frozenset[int] = frozenset({31337, 1337})

DEV_CHAIN_WARNING = "a development chain: whoever can reach its RPC can rewrite it"


def is_development_chain(chain_id: int | None) -> bool:
    """True for the chain ids of local development nodes (anvil, Hardhat, Ganache, geth --dev)."""
    return chain_id is not None and int(chain_id) in DEVELOPMENT_CHAIN_IDS


def development_chain_reason(chain_id: int) -> str:
    """The sentence a verdict resting on ``chain_id`` carries, e.g. ``chain 31337 is a development chain: ...``."""
    return f"chain {chain_id} is {DEV_CHAIN_WARNING}; a public deployment needs a real chain"
