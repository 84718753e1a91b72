"""Stable names of a plan's parts, shared by the reference executor, simulator, compiler and runtime.

>>> part_name(1), part_name(2, tile=0, hop=1), part_name(3, cluster=2), part_name(3, merge=True)
('s1', 's2_t0_h1', 's3_c2', 's3_merge')
"""


def part_name(stage: int, tile: int | None = None, hop: int = 0, cluster: int | None = None,
              merge: bool = False) -> str:
    if tile is not None:
        return f"s{stage}_t{tile}_h{hop}"
    if cluster is not None:
        return f"s{stage}_c{cluster}"
    return f"s{stage}_merge" if merge else f"s{stage}"
