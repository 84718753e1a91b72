"""halocut passes: graph transformations (fold, halo, slice, cut) and planners."""
