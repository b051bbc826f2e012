"""``Certifier`` built from its parts, not through ``Services``: the pipeline is usable on its own."""

from __future__ import annotations

import pytest

from provenance.certify.certifier import Certifier, CertifyOptions
from provenance.db.models import Record
from provenance.errors import ProvenanceError
from provenance.manifests.manifest import ManifestReader, ManifestSigner
from provenance.runtime.services import Services
from provenance.signing import sha256_hex, verify_signature
from tests.conftest import encode, photo


def test_certifier_from_its_parts_certifies_one_image(services: Services) -> None:
    recorded: list[Record] = []
    certifier = Certifier(
        repository=services.repository,
        keys=services.keys,
        manifest_signer=ManifestSigner(services.credentials),
        store=services.store,
        max_upload_bytes=5_000_000,
        max_pixels=1_000_000,
        on_recorded=recorded.append,
    )
    rgb = photo("coffee.png")[17:161, 31:223].copy()
    rgb[0, 0] = (1, 2, 3)  # content of its own: no other test certifies these bytes
    upload = encode(rgb)

    certified = certifier.certify(upload, CertifyOptions(filename="coffee.png", title="a cup"))

    record = certified.record
    assert services.repository.get(record.id) is not None and recorded == [record]
    assert record.sha256 == sha256_hex(certified.data) != sha256_hex(upload)  # the manifest is in the file
    assert services.store.cat(record.cid) == certified.data
    assert verify_signature(services.keys.active().public_key_pem, certified.data, record.signature)
    assert not record.watermarked and record.watermark_id is None  # no watermarker slot filled: no mark
    assert (record.width, record.height, record.original_filename) == (192, 144, "coffee.png")
    report = ManifestReader(services.credentials).read(certified.data, "image/png")
    assert report.present and report.valid and report.trusted and report.record_id == record.id
    assert set(certified.timings_ms) >= {"decode"}


def test_certifier_from_its_parts_keeps_its_own_limits(services: Services) -> None:
    certifier = Certifier(
        repository=services.repository,
        keys=services.keys,
        manifest_signer=ManifestSigner(services.credentials),
        store=services.store,
        max_upload_bytes=5_000_000,
        max_pixels=100 * 100,
    )
    with pytest.raises(ProvenanceError) as refused:
        certifier.certify(encode(photo("coffee.png")[:120, :120]))
    assert "pixel" in str(refused.value.detail).lower()
