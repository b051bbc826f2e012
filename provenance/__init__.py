"""provenance: certify AI-generated images and verify them back.

Every certified image carries an invisible watermark, a signed C2PA manifest and an ECDSA
signature over its bytes; it is pinned to IPFS and its hash is registered on an Ethereum
contract. Verification walks the same stages backwards.
"""

__version__ = "0.1.0"
PRODUCT_NAME = "provenance"
