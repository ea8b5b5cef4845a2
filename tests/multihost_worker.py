"""One process of the two-process training test (see test_multihost.py).

Usage: python multihost_worker.py PORT PROCESS_ID WORKDIR EVAL_DIR
Prints one JSON line: this process's view of the trained parameters.
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kdjax import parallel, train, weights  # noqa: E402
from test_train import tiny_config  # noqa: E402


def main(port: str, process_id: str, workdir: str, eval_root: str) -> None:
    config = tiny_config(Path(eval_root), steps=4)
    config.distributed.enabled = True
    config.distributed.coordinator_address = f"localhost:{port}"
    config.distributed.num_processes = 2
    config.distributed.process_id = int(process_id)
    parallel.initialize_distributed(config)
    report = train.train_and_evaluate(config, workdir)
    _, params = weights.restore_params(workdir, which="latest", ema=False)
    leaves = [np.asarray(leaf, np.float64) for leaf in jax.tree.leaves(params)]
    print(json.dumps({
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "checksum": float(sum(np.abs(leaf).sum() for leaf in leaves)),
        "first": [float(leaf.ravel()[0]) for leaf in leaves],
        "psnr_y": report["results"]["model"]["psnr_y"],
    }))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
