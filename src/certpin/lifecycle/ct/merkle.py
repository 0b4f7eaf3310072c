"""RFC 6962 §2.1 / RFC 9162 §2.1 Merkle tree hashing, proofs and the compact range.

The watcher never trusts a log's entries on their own: it folds every fetched entry's leaf hash
into a `CompactRange` (the roots of the perfect subtrees that make up the tree so far, at most one
per bit of the size) and compares the resulting root with the signed tree head. Because the
compact range of the last verified tree is kept in the state, that comparison also proves that
the new tree extends the old one; the consistency proof fetched before the entries
(`verify_consistency`) proves it without downloading anything, and catches a forked tree early.

Proofs are *generated* here too (`inclusion_path`, `consistency_proof`) from any source of
perfect-subtree hashes: a tiled log serves no proofs, only hashes, and the client computes the
proof it then verifies against the signed root (C2SP tlog-tiles). A tampered hash gives a proof
that fails; nothing taken from a tile is trusted until it verifies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "CompactRange",
    "NodeSource",
    "consistency_proof",
    "inclusion_path",
    "leaf_hash",
    "node_hash",
    "range_hash",
    "verify_consistency",
    "verify_inclusion",
]

#: RFC 6962 §2.1: the hash of an empty list is the hash of an empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()
#: tree sizes and indices are uint64 (RFC 6962 §3.5), so no proof is longer than this.
MAX_PROOF_NODES = 2 * 64

#: ``node(level, index)``: the root of the perfect subtree of 2**level leaves starting at leaf
#: ``index * 2**level``.
NodeSource = Callable[[int, int], bytes]

_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d): the hash of one leaf (a MerkleTreeLeaf, for CT)."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): an interior node."""
    return _sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k < n <= 2k (RFC 6962 §2.1: the split point of a tree of n > 1 leaves)."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactRange:
    """The roots of the perfect subtrees of a tree of `size` leaves, largest (leftmost) first.

    A tree of size 13 = 8 + 4 + 1 has three: MTH(D[0:8]), MTH(D[8:12]), MTH(D[12:13]). Appending
    a leaf merges equal-sized neighbours like a binary counter; the root folds them right to
    left. ``len(hashes) == bin(size).count("1")`` always holds.
    """

    __slots__ = ("size", "hashes")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != size.bit_count() or any(len(h) != 32 for h in hashes):
            raise ValueError(f"not a compact range of a tree of {size} leaves")
        self.size = size
        self.hashes = list(hashes)

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.hashes)

    def append(self, leaf_hash: bytes) -> None:
        hashes = self.hashes
        hashes.append(leaf_hash)
        size = self.size
        # Each trailing 1 bit of the old size is a perfect subtree the new leaf completes.
        while size & 1:
            right = hashes.pop()
            hashes[-1] = _sha256(b"\x01" + hashes[-1] + right).digest()
            size >>= 1
        self.size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        """MTH(D[0:size]) (RFC 6962 §2.1)."""
        if not self.hashes:
            return EMPTY_ROOT
        hashes = self.hashes
        root = hashes[-1]
        for h in reversed(hashes[:-1]):
            root = _sha256(b"\x01" + h + root).digest()
        return root

    @classmethod
    def from_last_leaf(cls, size: int, last_leaf: bytes, path: Sequence[bytes]) -> CompactRange:
        """The compact range of a tree, from its last leaf and that leaf's inclusion path.

        The path of leaf size-1 holds, bottom up, the left siblings inside the last perfect
        subtree, then the roots of the other perfect subtrees, smallest first. Call
        `verify_inclusion` on the same values first: only a verified path gives a trusted range.
        """
        if size < 1:
            raise ValueError("an empty tree has no last leaf")
        last_height = (size & -size).bit_length() - 1  # the smallest perfect subtree
        if len(path) != last_height + size.bit_count() - 1:
            raise ValueError(f"an inclusion path of {len(path)} nodes for leaf {size - 1}")
        node = last_leaf
        for sibling in path[:last_height]:
            node = node_hash(sibling, node)
        return cls(size, [*reversed(path[last_height:]), node])


# -- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ------------------------------------------------


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> bool:
    """True when `path` proves that leaf hash `leaf` is at `index` in the tree `root` of `size`."""
    if not 0 <= index < size or len(path) > MAX_PROOF_NODES:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True when `proof` shows the tree (`second`, `second_root`) extends (`first`, `first_root`).

    An empty tree is a prefix of every tree; a tree is consistent with itself only if the roots
    are equal and the proof is empty.
    """
    if not 0 <= first <= second or len(proof) > MAX_PROOF_NODES:
        return False
    if first == 0:
        return not proof
    if first == second:
        return not proof and first_root == second_root
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of 2: the old root is itself a node
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


# -- generation, from perfect-subtree hashes (RFC 6962 §2.1.1 and §2.1.2) ------------------------


def range_hash(node: NodeSource, start: int, end: int) -> bytes:
    """MTH(D[start:end]), asking `node` only for perfect, aligned subtrees."""
    n = end - start
    if n <= 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and start % n == 0:
        return node(n.bit_length() - 1, start // n)
    k = _largest_power_of_two_below(n)
    return node_hash(range_hash(node, start, start + k), range_hash(node, start + k, end))


def inclusion_path(node: NodeSource, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]), bottom up (RFC 6962 §2.1.1)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index < start + k:
            path.append(range_hash(node, start + k, end))
            end = start + k
        else:
            path.append(range_hash(node, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(node: NodeSource, first: int, second: int) -> list[bytes]:
    """PROOF(first, D[0:second]) (RFC 6962 §2.1.2); empty for first in (0, second)."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from {first} to {second} leaves")
    if first in (0, second):
        return []
    proof: list[bytes] = []
    start, end, whole = 0, second, True
    m = first
    while True:
        n = end - start
        if m == n:
            if not whole:
                proof.append(range_hash(node, start, end))
            break
        k = _largest_power_of_two_below(n)
        if m <= k:
            proof.append(range_hash(node, start + k, end))
            end = start + k
        else:
            proof.append(range_hash(node, start, start + k))
            start += k
            m -= k
            whole = False
    proof.reverse()
    return proof
