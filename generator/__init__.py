"""Text-to-image generation with Hugging Face diffusers, for the provenance service.

- ``generator.models``: where a model comes from (built-in tiny pipeline, local diffusers folder,
  single-file checkpoint, hub id) and the SHA-256 of every weight file it loads.
- ``generator.tiny``: a tiny random-weight Stable Diffusion pipeline built locally from configs,
  for tests and the offline default. Labelled ``tiny-random (testing only)`` everywhere.
- ``generator.pipeline``: ``Generator``, which loads a model once and runs requests with progress
  reporting, cancellation, LoRA adapters and a scheduler chosen by name.
"""
