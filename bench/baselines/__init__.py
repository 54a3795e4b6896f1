"""Hand-written asyncio baselines the benchmarks compare plait against."""
