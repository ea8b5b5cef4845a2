"""Two processes on this machine train together through jax.distributed (CPU).

They must agree on the parameters, and match one process with two devices
training on the same global batches.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import portpicker

from kdjax import train, weights
from test_train import tiny_config

WORKER = Path(__file__).with_name("multihost_worker.py")


def test_two_processes_train_together_and_agree(tmp_path):
    port = portpicker.pick_unused_port()
    workdir = tmp_path / "multihost"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(port), str(index), str(workdir), str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for index in range(2)
    ]
    outputs = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr[-3000:]
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert [o["process_index"] for o in outputs] == [0, 1]
    assert all(o["process_count"] == 2 and o["device_count"] == 2 for o in outputs)
    assert outputs[0]["first"] == outputs[1]["first"]
    assert outputs[0]["checksum"] == outputs[1]["checksum"]
    # Each process saved its own data-iterator state beside the shared train state.
    iterator_files = sorted(p.name for p in (workdir / "checkpoints" / "4" / "data_iter").glob("*.json"))
    assert iterator_files == ["process_0-of-2.json", "process_1-of-2.json"]

    # One process with two devices sees the same global batches (in another order
    # within the batch), so it must reach the same parameters up to float rounding.
    single = tmp_path / "single"
    train.train_and_evaluate(tiny_config(tmp_path, steps=4), single, devices=jax.devices()[:2])
    _, params = weights.restore_params(single, which="latest", ema=False)
    first = [float(np.ravel(leaf)[0]) for leaf in jax.tree.leaves(params)]
    np.testing.assert_allclose(first, outputs[0]["first"], rtol=1e-4, atol=1e-6)
