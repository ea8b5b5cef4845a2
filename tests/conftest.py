"""Test-wide JAX set-up: eight fake CPU devices, so sharding tests run anywhere."""

import jax

# Must happen before any JAX backend is initialised; every test process sees the
# same 8 host devices, and single-device tests build a 1-device mesh explicitly.
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_platforms", "cpu")
