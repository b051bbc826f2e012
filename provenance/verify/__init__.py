"""Verification: the online verifier (the stages backwards) and the offline bundle verifier."""
