"""Which backend JAX runs on: a one-sentence error when ``JAX_PLATFORMS`` names one not installed.

JAX picks the best installed backend (an NVIDIA GPU with ``jax[cuda13]``, a TPU with
``jax[tpu]``, else the CPU); ``JAX_PLATFORMS=cpu`` (or ``cuda``, ``tpu``) forces one. Asking
for one whose plugin is missing fails deep inside JAX (for ``cuda``, in jax 0.10, a bare
``AssertionError``); `check_backend` turns that into a `kdjax.errors.BackendError`.
"""

from __future__ import annotations

import os

from kdjax.errors import BackendError

INSTALL_HINT = 'NVIDIA GPUs: pip install -U "jax[cuda13]", TPUs: pip install -U "jax[tpu]"'


def check_backend() -> None:
    """Starts JAX's backend; `BackendError` naming ``JAX_PLATFORMS`` and the fix if it cannot."""
    import jax  # pylint: disable=import-outside-toplevel  # the callers have checked their flags first

    try:
        jax.devices()
    except (RuntimeError, AssertionError):
        requested = os.environ.get("JAX_PLATFORMS", "") or jax.config.jax_platforms or "the default"
        raise BackendError(
            f"JAX cannot start the backend JAX_PLATFORMS={requested} asks for; install its JAX plugin "
            f"({INSTALL_HINT}) or unset JAX_PLATFORMS to use what is installed."
        ) from None
