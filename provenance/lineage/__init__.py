"""Lineage: what made an image. Datasets (items, Merkle root on chain, membership proofs), registered and
signed models (base checkpoints and LoRAs), LoRA training runs, and the royalty shares of their creators."""
