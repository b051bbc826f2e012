"""Stage 2, marks: the watermark (chroma and luminance components) and the perceptual fingerprints.

Also what confirms a travelled copy against its original: alignment, content binding and the exact
test of the mark.
"""
