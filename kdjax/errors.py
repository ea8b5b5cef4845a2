"""Errors that ``kdjax`` commands report as one sentence, importable without JAX, Orbax or Grain.

The command line (`kdjax.cli`) prints these, like `ValueError` and the file errors of `OSError`,
as ``error: <sentence>`` instead of a traceback. They live here, apart from the code that raises
them, so that catching them does not import that code: `kdjax sharpen` must not load training.
"""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss or gradient."""


class BackendError(RuntimeError):
    """JAX cannot start the backend the environment asks for (``JAX_PLATFORMS``)."""
