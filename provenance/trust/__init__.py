"""The trust document: which registry, keys and C2PA roots a verifier trusts, and the admin actions that publish it."""
