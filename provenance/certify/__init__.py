"""The certify pipeline: input, mark, fingerprint, manifest, hash and sign, pin, record, anchor."""
