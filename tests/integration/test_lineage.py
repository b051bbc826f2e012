"""Every generated image carries its lineage (base model, LoRA, dataset) in its C2PA manifest and its record,
and verify shows each link checked; a changed LoRA is a broken link that leaves the image's verdict alone."""

from __future__ import annotations

import io
import json
import secrets
from pathlib import Path
from typing import Any

import c2pa
import pytest
from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from eth_typing import HexStr
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image

from generator.models import ModelCatalog
from generator.pipeline import GenerationRequest, Generator, LoraSpec
from generator.tiny import build_tiny_pipeline
from provenance.certify.certifier import CertifyOptions
from provenance.db.models import Dataset, RecordStatus
from provenance.lineage.common import dataset_key
from provenance.manifests.manifest import GENERATED_SOURCE_TYPE
from provenance.manifests.vocabulary import c2pa_settings
from provenance.runtime.services import Services
from tests.conftest import wait_for


def _tiny_lora(folder: Path) -> Path:
    """Random LoRA weights on the tiny UNet, saved in the diffusers format (what training writes)."""
    pipe: Any = build_tiny_pipeline()  # diffusers types its components loosely
    pipe.unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v"])
    )
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"


def _on_chain(services: Services, key: str, cid: str) -> None:
    registry = services.chain.registry
    registry.w3.eth.wait_for_transaction_receipt(HexStr(registry.submit(key, cid)))


@pytest.fixture(scope="module")
def lineage_setup(services: Services, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A registered base model (the tiny pipeline), a registered LoRA trained on a registered dataset."""
    tmp = tmp_path_factory.mktemp("lineage")
    generator = Generator(ModelCatalog(tmp / "models"), device="cpu")
    base_dir = Path(generator.catalog.resolve(None).location)
    lora = _tiny_lora(tmp / "lora")
    # The datasets helper's service may not be wired here: the dataset row is written directly, its root
    # registered on chain under its domain-tagged key.
    dataset = Dataset(
        id=secrets.token_hex(8),
        name="sixteen pictures",
        root="0x" + secrets.token_hex(32),
        item_count=16,
        manifest_cid="bafkreidatasetmanifest",
        manifest_sha256=secrets.token_hex(32),
        status=RecordStatus.REGISTERED,
    )
    with services.sessions.begin() as session:
        session.add(dataset)
    _on_chain(services, dataset_key(dataset.root), dataset.manifest_cid)
    base = services.models.register(base_dir, name="tiny base", kind="base")
    adapter = services.models.register(lora, name="tiny lora", kind="lora", dataset_id=dataset.id)

    # The models' digests go on chain through the lineage anchorer (a follower of the record anchorer).
    def registered() -> bool:
        services.anchorer.run_once()
        return all(services.models.get(row.id).status == RecordStatus.REGISTERED for row in (base, adapter))

    wait_for(registered)
    return {"generator": generator, "lora": lora, "dataset": dataset, "base": base, "adapter": adapter}


def _generate(services: Services, generator: Generator, lora: Path, seed: int) -> tuple[bytes, str]:
    loras = (LoraSpec(str(lora), 0.8),)
    request = GenerationRequest("a lighthouse", steps=2, width=64, height=64, seed=seed, loras=loras)
    [image] = generator.generate(request)
    out = io.BytesIO()
    Image.fromarray(image.rgb).save(out, "PNG")
    options = CertifyOptions(source_type=GENERATED_SOURCE_TYPE, generation=image.provenance)
    certified = services.certifier.certify(out.getvalue(), options)
    return certified.data, certified.record.id


def _ingredients(services: Services, data: bytes) -> list[dict[str, Any]]:
    settings = c2pa_settings(services.credentials, thumbnail=False)
    with c2pa.Context(settings=settings) as ctx, c2pa.Reader("image/png", io.BytesIO(data), None, ctx) as reader:
        store = json.loads(reader.json())
    return list(store["manifests"][store["active_manifest"]]["ingredients"])


def test_manifest_record_and_verify_show_the_lineage(services: Services, lineage_setup: dict[str, Any]) -> None:
    setup = lineage_setup
    data, record_id = _generate(services, setup["generator"], setup["lora"], seed=1)
    ingredients = _ingredients(services, data)
    kinds = [(i["relationship"], i["data_types"][0]["type"]) for i in ingredients]
    assert kinds == [
        ("inputTo", "c2pa.types.model.pytorch"),
        ("inputTo", "c2pa.types.model.pytorch"),
        ("inputTo", "c2pa.types.dataset"),
    ]
    meta = [i["metadata"]["org.provenance.lineage"] for i in ingredients]
    assert meta[0]["model_id"] == setup["base"].id and meta[0]["digest"] == setup["base"].digest
    assert meta[1]["model_id"] == setup["adapter"].id and meta[1]["weight"] == 0.8
    assert meta[2]["dataset_id"] == setup["dataset"].id and meta[2]["root"] == setup["dataset"].root

    record = services.repository.get(record_id)
    assert record is not None and record.generation is not None
    [lora] = record.generation["lineage"]["loras"]
    assert lora["dataset_manifest_cid"] == "bafkreidatasetmanifest"

    result = services.verifier.verify(data)
    assert result.lineage is not None
    links = [(link.kind, link.status) for link in result.lineage.links]
    assert links == [("base", "verified"), ("lora", "verified"), ("dataset", "verified")], result.lineage
    assert all(link.hash_matches and link.registered_on_chain for link in result.lineage.links)
    assert result.lineage.links[0].signature_valid and result.lineage.links[1].signature_valid
    assert result.lineage.status == "verified"


def test_a_changed_lora_is_a_broken_link_and_the_verdict_stands(
    services: Services, lineage_setup: dict[str, Any], tmp_path: Path
) -> None:
    setup = lineage_setup
    changed = tmp_path / "changed.safetensors"
    raw = bytearray(setup["lora"].read_bytes())
    raw[-1] ^= 0x01  # one byte of the last tensor's data
    changed.write_bytes(bytes(raw))
    data, record_id = _generate(services, setup["generator"], changed, seed=2)
    result = services.verifier.verify(data)
    assert result.record_id == record_id and result.verdict in ("authentic", "pending")
    assert result.lineage is not None and result.lineage.status == "broken"
    base, lora = result.lineage.links
    assert base.status == "verified"
    assert lora.status == "broken" and lora.model_id is None and "matches no registered model" in lora.reason
    [ingredient] = [i for i in _ingredients(services, data) if "lora" in i["description"].lower()]
    assert ingredient["metadata"]["org.provenance.lineage"]["model_id"] is None
