"""halocut compiler: front end, IR analysis, driver and CLI."""
