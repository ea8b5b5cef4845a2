"""Peak memory of `kdjax import-weights` on a normal checkpoint and on hostile ones.

Writes, with the tests' hand-made torch.save writer (tests/test_torch_import.py), an rlfn_s
checkpoint of random weights and three hostile variants, imports each with the installed
``kdjax`` command in its own process and prints that process's exit code, peak RSS and last
line of stderr:

* ``bloated``: storage 0 replaced by 1 GiB of deflated zeros (a 3 MiB file), data.pkl
  declaring that many elements: consistent, only far larger than rlfn_s needs;
* ``zero_stride``: a 642-byte file whose one tensor views a 4-element storage as 2**20 x 2**20
  with zero strides;
* ``lying_header``: data.pkl declares 2**28 elements for a 16-byte storage entry.

Usage: python benchmarks/hostile_checkpoints.py [--authors ../shared/weights/rlfn_s_x2.pth]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_torch_import import (  # noqa: E402  # pylint: disable=wrong-import-position
    _save_state_dict, _torch_layout_state_dict, _with_zero_entry, _write_torch_file,
)

KDJAX = Path(sys.executable).parent / "kdjax"


def _import(checkpoint: Path, output: Path) -> tuple[int, float, str]:
    """(exit code, peak RSS in MiB, last stderr line) of one `kdjax import-weights` process."""
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [str(KDJAX), "import-weights", "--arch=rlfn_s", f"--input={checkpoint}", f"--output={output}"],
            stdout=subprocess.DEVNULL, stderr=stderr,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        lines = [line for line in stderr.read().splitlines() if line.strip()]
    return process.returncode, usage.ru_maxrss / 1024, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, default=REPO.parent / "shared" / "weights" / "rlfn_s_x2.pth")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        normal = _save_state_dict(folder / "normal.pth", _torch_layout_state_dict("rlfn_s"))
        storage = {"0": np.zeros(4, np.float32)}
        files = {"normal (random weights)": normal}
        if args.authors.is_file():
            files["authors' rlfn_s_x2.pth"] = args.authors
        files["bloated"] = _with_zero_entry(normal, folder / "bloated.pth", "archive/data/0", 1 << 30)
        files["zero_stride"] = _write_torch_file(
            folder / "zero_stride.pth", {"w": ("FloatStorage", "0", 4, 0, (1 << 20, 1 << 20), (0, 0))}, storage
        )
        files["lying_header"] = _write_torch_file(
            folder / "lying_header.pth", {"w": ("FloatStorage", "0", 1 << 28, 0, (4,), (1,))}, storage
        )
        print("| checkpoint | file size | exit code | peak RSS (MiB) | last line |")
        print("| --- | ---: | ---: | ---: | --- |")
        for index, (name, path) in enumerate(files.items()):
            code, peak, last = _import(path, folder / f"out_{index}")
            print(f"| {name} | {path.stat().st_size:,} B | {code} | {peak:.0f} | {last[:160]} |", flush=True)


if __name__ == "__main__":
    main()
