"""Regions of feature maps: half-open rows ``[r0, r1)`` and columns ``[c0, c1)`` of an (N, C, H, W) tensor.

:class:`Region` is what a tile produces, what a halo rule asks of an input,
and what a transfer moves; :data:`Interval` is a half-open range of one axis
(rows, columns or fc features).

>>> Region((0, 4), (0, 8)).union(Region((2, 6), (0, 8)))
Region(rows=(0, 6), cols=(0, 8))
>>> Region((0, 4), (0, 8)).intersect(Region((6, 9), (0, 8))).is_empty()
True
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

Interval = tuple[int, int]


@dataclass(frozen=True)
class Region:
    """Rows ``[r0, r1)`` and columns ``[c0, c1)`` of a feature map."""

    rows: Interval
    cols: Interval

    @property
    def height(self) -> int:
        return self.rows[1] - self.rows[0]

    @property
    def width(self) -> int:
        return self.cols[1] - self.cols[0]

    def is_empty(self) -> bool:
        return self.height <= 0 or self.width <= 0

    def union(self, other: Region) -> Region:
        """The smallest region holding both (a hull: halos are contiguous); empty regions add nothing."""
        if other.is_empty():
            return self
        if self.is_empty():
            return other
        return Region((min(self.rows[0], other.rows[0]), max(self.rows[1], other.rows[1])),
                      (min(self.cols[0], other.cols[0]), max(self.cols[1], other.cols[1])))

    def clip(self, height: int, width: int) -> Region:
        """The part inside a ``height x width`` map (possibly empty: a window wholly in the padding)."""
        r0, c0 = min(max(self.rows[0], 0), height), min(max(self.cols[0], 0), width)
        return Region((r0, max(min(self.rows[1], height), r0)), (c0, max(min(self.cols[1], width), c0)))

    def intersect(self, other: Region) -> Region:
        """The rows and columns both hold (empty when they do not overlap)."""
        return Region((max(self.rows[0], other.rows[0]), min(self.rows[1], other.rows[1])),
                      (max(self.cols[0], other.cols[0]), min(self.cols[1], other.cols[1])))

    def relative_to(self, outer: Region) -> Region:
        """This region in the coordinates of a tensor that holds ``outer``."""
        return Region((self.rows[0] - outer.rows[0], self.rows[1] - outer.rows[0]),
                      (self.cols[0] - outer.cols[0], self.cols[1] - outer.cols[0]))

    def to_json(self) -> dict:
        return {"rows": list(self.rows), "cols": list(self.cols)}

    @staticmethod
    def from_json(data: dict) -> Region:
        return Region(tuple(data["rows"]), tuple(data["cols"]))

    @staticmethod
    def full(shape: tuple[int, ...]) -> Region:
        """All of a (N, C, H, W) tensor."""
        return Region((0, shape[-2]), (0, shape[-1]))


EMPTY = Region((0, 0), (0, 0))  # what a tile needs of a node its windows only see as padding


def full_region(node: fx.Node) -> Region | None:
    """All of a node's feature map, or None for a value that is not one (a vector: moved whole)."""
    shape = tuple(getattr(node.meta.get("tensor_meta"), "shape", ()))
    return Region.full(shape) if len(shape) == 4 else None


def overlap_bytes(piece, region: Region | None) -> float:
    """Bytes of ``piece`` (anything with ``region`` and ``size_bytes``) that ``region`` reads.

    >>> from types import SimpleNamespace
    >>> overlap_bytes(SimpleNamespace(region=Region((0, 4), (0, 4)), size_bytes=64.0), Region((2, 8), (0, 4)))
    32.0
    """
    if region is None or piece.region is None:
        return piece.size_bytes
    overlap = piece.region.intersect(region)
    if overlap.is_empty():
        return 0.0
    return piece.size_bytes * overlap.height * overlap.width / float(piece.region.height * piece.region.width)
