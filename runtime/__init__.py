"""halocut runtime: reference executor, simulator, Ray execution and benchmarks."""
