"""Perceptual hash (pHash) of an image, as 16 hex digits: near-duplicates differ in few bits.

The algorithm and the string are those of `imagehash.phash` (grey 32x32 Lanczos thumbnail,
2-D DCT-II, the 8x8 lowest frequencies compared with their median, bits as hex): the tests check
it against imagehash bit for bit on real photos. It is written here because imagehash needs
SciPy for one 32-point DCT — 141 MB of the deployment's installed size, and import time on every
cold start — where a 32x32 cosine matrix in NumPy gives the same numbers.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HASH_SIZE = 8
HIGHFREQ_FACTOR = 4
_N = HASH_SIZE * HIGHFREQ_FACTOR


def _dct_matrix(n: int) -> np.ndarray:
    """Unnormalised DCT-II (SciPy's default): y[k] = 2 Σ x[i] cos(π k (2i + 1) / 2n)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT = _dct_matrix(_N)


def phash(image: Image.Image) -> str:
    small = image.convert("L").resize((_N, _N), Image.Resampling.LANCZOS)
    pixels = np.asarray(small, dtype=np.float64)
    dct = _DCT @ pixels @ _DCT.T  # along axis 0, then axis 1
    low = dct[:HASH_SIZE, :HASH_SIZE]
    bits = (low > np.median(low)).flatten()
    value = int("".join("1" if b else "0" for b in bits), 2)
    return f"{value:0{HASH_SIZE * HASH_SIZE // 4}x}"


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hashes (≤ 10 of 64: a near-duplicate)."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
