"""The benchmarks' measured results (one JSON file per benchmark), shipped as the package data
``kdjax.benchmark_results`` so that ``kdjax models`` quotes them from any directory."""
