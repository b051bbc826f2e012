"""Anchoring: move records from ``pending`` to ``registered`` on chain, surviving crashes.

Three modes. ``single``: one ``register(hash, cid)`` transaction per record. ``batch``: pending
records are collected until there are ``batch_max_items`` of them or the oldest has waited
``batch_max_seconds``; their hashes become the leaves of a Merkle tree whose sorted leaf list is
published on IPFS, and one ``anchorBatch(root, leavesCid, count)`` transaction anchors them all.
Each record keeps its root and inclusion proof. ``auto`` (the default): one transaction per record
while few are waiting, and a Merkle batch of everything waiting as soon as ``batch_backlog``
records are, so that registration keeps up with any certification rate. In ``auto`` mode an account
also gets at most ``single_per_account_per_min`` single transactions a minute (admin accounts apart):
its further records wait for a Merkle batch (closed like a ``batch``-mode one), so one API key cannot
make the operator spend gas without bound.

Only one process per database anchors: the holder of the writer lease (``provenance/chain/writer.py``).
A pass sends every pending registration at once with consecutive nonces (``submit_many``) and
collects the receipts in one JSON-RPC batch on the next pass. A transaction still waiting after
``replace_after_s`` is sent again with the same nonce and a higher fee.

The worker never trusts its own memory: every pass reads the database and the chain. A record
(or batch) is ``pending`` until a transaction is sent, ``submitted`` with its tx hash until that
transaction is mined and buried under ``confirmations`` blocks, then ``registered``. After a crash
at any point a pass repairs it: a transaction the node never saw (dropped, or lost with a reset
dev chain) goes back to pending and is sent again, and a pending item whose hash or root is
already on chain (sent just before a crash) is marked registered without a second transaction,
because the contract is the source of truth and refuses duplicates anyway.
"""

from __future__ import annotations

# The anchorer (one pass of the state machine) lives in ``anchorer``, the worker thread and the CLI's hand-over
# in ``worker``; their names stay importable from here, where callers have always found them.
from provenance.anchoring.anchorer import LEAVES_FORMAT, Anchorer, leaves_document  # noqa: F401
from provenance.anchoring.worker import AnchorWorker, register_or_hand_over  # noqa: F401
