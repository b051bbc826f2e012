"""``watermark.largest_singular_values``: the certified power iteration gives what an SVD gives.

Every mark read votes on ``s0 mod 48``; a value off by more than rounding would move votes. Compared with
``np.linalg.svd`` on random blocks, on the U-band blocks of real photographs (as given, marked, and
rescaled as the blind read rescales them), and on the blocks power iteration handles worst: zero,
rank-deficient, equal top singular values, a start orthogonal to the top eigenvector, non-finite values.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from provenance.marks.watermark import FastDwtDctSvd, MarkKey, embed, largest_singular_values
from tests.conftest import PHOTOS, photo


def reference(blocks: np.ndarray) -> np.ndarray:
    return np.linalg.svd(blocks, compute_uv=False)[:, 0]


def assert_close(blocks: np.ndarray) -> None:
    expected = reference(blocks)
    got = largest_singular_values(blocks)
    assert got.shape == expected.shape
    scale = np.maximum(expected, 1e-300)
    assert np.max(np.abs(got - expected) / scale, initial=0.0) < 1e-12


def u_band_blocks(rgb: np.ndarray) -> np.ndarray:
    """The 4x4 blocks of the Haar approximation band of U, as the blind read sees them."""
    u = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV)[:, :, 1].astype(np.float64)
    h, w = u.shape[0] // 8 * 8, u.shape[1] // 8 * 8
    u = u[:h, :w]
    ca = (u[0::2, 0::2] + u[1::2, 0::2] + u[0::2, 1::2] + u[1::2, 1::2]) / 2
    rows, cols = ca.shape[0] // 4, ca.shape[1] // 4
    return ca.reshape(rows, 4, cols, 4).swapaxes(1, 2).reshape(-1, 4, 4)


def test_random_blocks() -> None:
    rng = np.random.default_rng(7)
    assert_close(rng.normal(size=(5000, 4, 4)))
    assert_close(rng.uniform(0, 510, size=(5000, 4, 4)))  # the range of the U band
    assert_close(rng.normal(size=(300, 3, 5)))  # another block shape


@pytest.mark.parametrize("name", PHOTOS)
def test_photograph_blocks(name: str) -> None:
    image = photo(name)
    marked = embed(image, 4242, MarkKey(b"singular values test key 32 byte"))
    for picture in (image, marked):
        assert_close(u_band_blocks(picture))
        for factor in (2.0, 1.5):
            size = (round(picture.shape[1] * factor), round(picture.shape[0] * factor))
            assert_close(u_band_blocks(cv2.resize(picture, size, interpolation=cv2.INTER_CUBIC)))


def test_degenerate_blocks() -> None:
    rng = np.random.default_rng(3)
    zero = np.zeros((4, 4))
    identity = 5.0 * np.eye(4)  # four equal singular values: power iteration cannot separate them
    equal_top = np.diag([3.0, 3.0, 1.0, 0.0])
    rank_one = np.outer(rng.normal(size=4), rng.normal(size=4))
    rank_two = rng.normal(size=(4, 2)) @ rng.normal(size=(2, 4))
    # The all-ones start is orthogonal to the top right singular vector.
    orthogonal = np.outer(np.ones(4), [1.0, -1.0, 1.0, -1.0]) + 0.1 * np.outer(np.ones(4), np.ones(4))
    tiny = 1e-140 * rng.normal(size=(4, 4))  # its power iterates underflow
    huge = 1e100 * rng.normal(size=(4, 4))
    close_top = np.diag([1.0, 1.0 - 1e-9, 0.5, 0.1])
    blocks = np.stack([zero, identity, equal_top, rank_one, rank_two, orthogonal, tiny, huge, close_top])
    assert_close(blocks)
    assert largest_singular_values(np.zeros((0, 4, 4))).shape == (0,)
    assert largest_singular_values(zero[None])[0] == 0.0


def test_planar_layout_gives_the_same_values() -> None:
    blocks = u_band_blocks(photo("coffee.png"))
    planes = np.ascontiguousarray(blocks.transpose(1, 2, 0))
    assert np.array_equal(largest_singular_values(planes, planar=True), largest_singular_values(blocks))


def test_vote_fractions_match_the_svd_votes() -> None:
    """The hard votes of a blind read are those of a plain SVD of every block."""
    key = MarkKey(b"singular values test key 32 byte")
    marked = embed(photo("astronaut.png"), 99, key)
    coder = FastDwtDctSvd(watermarks=[], wmLen=80, scales=[0, 48, 0], block=4, layout=key.layout)
    blocks = u_band_blocks(marked)
    index, dither = key.layout.of_blocks(0, blocks.shape[0])
    votes = (((reference(blocks) - dither * 48) % 48) > 24).astype(np.float64)
    expected = np.bincount(index, weights=votes, minlength=80) / np.bincount(index, minlength=80)
    assert np.array_equal(coder.vote_fractions(marked), expected)
