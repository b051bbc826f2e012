"""Stage 6, anchor: registering certified hashes on chain (one transaction per image or Merkle batches)."""
