"""One file per registered planner (see halocut.planning.PLANNERS)."""
