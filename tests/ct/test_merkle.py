"""RFC 6962 / RFC 9162 Merkle hashing and proofs: the published test vectors, and properties
against a plain recursive MTH over every tree shape."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certpin.lifecycle.ct.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_path,
    leaf_hash,
    range_hash,
    verify_consistency,
    verify_inclusion,
)

# transparency-dev/merkle testonly vectors (the certificate-transparency reference tree).
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
CONSISTENCY = [
    (
        2,
        8,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


def mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 §2.1 as written: the reference the fast code is checked against."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(hashes[:k]) + mth(hashes[k:])).digest()


def oracle(hashes: list[bytes]):
    def node(level: int, index: int) -> bytes:
        return mth(hashes[index << level : (index + 1) << level])

    return node


HASHES = [leaf_hash(leaf) for leaf in LEAVES]


def test_the_reference_roots():
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    cr = CompactRange()
    for n, h in enumerate(HASHES):
        cr.append(h)
        assert cr.root().hex() == ROOTS[n]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_the_reference_inclusion_proofs(index, size, path):
    proof = inclusion_path(oracle(HASHES), index, size)
    assert [p.hex() for p in proof] == path
    root = bytes.fromhex(ROOTS[size - 1])
    assert verify_inclusion(index, size, HASHES[index], proof, root)
    assert not verify_inclusion(index ^ 1, size, HASHES[index], proof, root)


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_the_reference_consistency_proofs(first, second, proof):
    generated = consistency_proof(oracle(HASHES), first, second)
    assert [p.hex() for p in generated] == proof
    a, b = bytes.fromhex(ROOTS[first - 1]), bytes.fromhex(ROOTS[second - 1])
    assert verify_consistency(first, second, a, b, generated)
    assert not verify_consistency(first, second, b, a, generated)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.data())
def test_proofs_verify_and_nothing_else_does(size, data):
    hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(size)]
    node = oracle(hashes)
    root = mth(hashes)
    index = data.draw(st.integers(0, size - 1))
    path = inclusion_path(node, index, size)
    assert verify_inclusion(index, size, hashes[index], path, root)
    assert not verify_inclusion(index, size, hashes[index], path, leaf_hash(b"x"))
    if path:
        broken = list(path)
        broken[data.draw(st.integers(0, len(path) - 1))] = leaf_hash(b"y")
        assert not verify_inclusion(index, size, hashes[index], broken, root)
    first = data.draw(st.integers(0, size))
    proof = consistency_proof(node, first, size)
    old = mth(hashes[:first])
    assert verify_consistency(first, size, old, root, proof)
    if 0 < first < size:
        assert not verify_consistency(first, size, leaf_hash(b"z"), root, proof)
        assert not verify_consistency(first, size, old, root, proof[:-1])
        forked = hashes[: first - 1] + [leaf_hash(b"fork")] + hashes[first:]
        assert not verify_consistency(first, size, old, mth(forked), proof)
    cr = CompactRange()
    cr.extend(hashes)
    assert cr.root() == root == range_hash(node, 0, size)
    assert (
        CompactRange.from_last_leaf(size, hashes[-1], inclusion_path(node, size - 1, size)).root()
        == root
    )


def test_a_compact_range_refuses_the_wrong_shape():
    with pytest.raises(ValueError):
        CompactRange(3, [EMPTY_ROOT])
    with pytest.raises(ValueError):
        CompactRange(1, [b"short"])
    assert not verify_consistency(3, 2, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(2, 2, EMPTY_ROOT, leaf_hash(b""), [])
    assert not verify_inclusion(3, 3, EMPTY_ROOT, [], EMPTY_ROOT)
    assert not verify_consistency(1, 2, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT] * 200)
