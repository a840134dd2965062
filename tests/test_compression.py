"""Compressed bytes depend only on the uncompressed bytes, never on how a
writer happened to split them into calls (ISA-L's output does depend on it)."""

import hashlib
import io
import os
import random

import pytest

from ocibuild.oci.compression import compression


def _compress(name: str, data: bytes, sizes: list[int], seed: int) -> bytes:
    out = io.BytesIO()
    w = compression(name).writer(out)
    rnd = random.Random(seed)
    i = 0
    while i < len(data):
        n = rnd.choice(sizes)
        w.write(data[i:i + n])
        i += n
    w.close()
    return out.getvalue()


@pytest.mark.parametrize("name", ["gzip", "zstd", "none"])
def test_output_independent_of_write_sizes(name):
    rnd = random.Random(7)
    # Compressible but not trivial: repeated random words, ~3 MiB.
    words = [os.urandom(rnd.randint(1, 12)) for _ in range(500)]
    data = b"".join(rnd.choice(words) for _ in range(500_000))
    splits = [[len(data)], [512], [1 << 20], [1, 7, 512, 100_000, (1 << 20) + 3]]
    digests = {hashlib.sha256(_compress(name, data, s, seed)).hexdigest()
               for seed, s in enumerate(splits)}
    assert len(digests) == 1


def test_gzip_round_trips_and_header_is_fixed():
    import gzip
    data = os.urandom(100_000) * 3
    blob = _compress("gzip", data, [4096], 0)
    assert blob[:10] == bytes.fromhex("1f8b0800000000000" "0ff")
    assert gzip.decompress(blob) == data
