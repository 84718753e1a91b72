"""Search code several planners share: cut positions, volume tables, the boundary DP, min-max splits,
CoopAI units, fused paths."""
