"""Stable names of a plan's parts, shared by the reference executor, simulator, compiler and runtime.

>>> part_name(1), part_name(2, tile=0, hop=1), part_name(3, cluster=2), part_name(3, merge=True)
('s1', 's2_t0_h1', 's3_c2', 's3_merge')
>>> parse_part_name("s2_t0_h1")
PartId(stage=2, tile=0, hop=1, cluster=None, merge=False)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERN = re.compile(r"s(\d+)(?:_t(\d+)_h(\d+)|_c(\d+)|_(merge))?")


@dataclass(frozen=True)
class PartId:
    stage: int
    tile: int | None = None
    hop: int = 0
    cluster: int | None = None
    merge: bool = False

    @property
    def kind(self) -> str:
        """``stage``, ``tile``, ``cluster`` or ``merge``."""
        if self.tile is not None:
            return "tile"
        if self.cluster is not None:
            return "cluster"
        return "merge" if self.merge else "stage"


def part_name(stage: int, tile: int | None = None, hop: int = 0, cluster: int | None = None,
              merge: bool = False) -> str:
    if tile is not None:
        return f"s{stage}_t{tile}_h{hop}"
    if cluster is not None:
        return f"s{stage}_c{cluster}"
    return f"s{stage}_merge" if merge else f"s{stage}"


def parse_part_name(name: str) -> PartId:
    """The inverse of :func:`part_name`."""
    match = _PATTERN.fullmatch(name)
    if match is None:
        raise ValueError(f"'{name}' is not a part name")
    stage, tile, hop, cluster, merge = match.groups()
    return PartId(int(stage), None if tile is None else int(tile), int(hop or 0),
                  None if cluster is None else int(cluster), merge is not None)
