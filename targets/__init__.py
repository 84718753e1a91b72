"""halocut targets: devices, topologies and cost models."""
