"""Text-to-image generation with Hugging Face diffusers, for the provenance service.

- ``generator.models``: where a model comes from (built-in tiny pipeline, local diffusers folder,
  single-file checkpoint, hub id) and the SHA-256 of every weight file it loads.
- ``generator.tiny``: a tiny random-weight Stable Diffusion pipeline built locally from configs,
  for tests and the offline default. Labelled ``tiny-random (testing only)`` everywhere.
- ``generator.pipeline``: ``Generator``, which loads a model once and runs requests with progress
  reporting, cancellation, LoRA adapters and a scheduler chosen by name.
"""

import os as _os

# transformers and diffusers read these when first imported: keep their advice out of service logs.
_os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
_os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
