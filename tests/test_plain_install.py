"""A plain install works: `pip install .` without extras into a fresh virtual environment, then
every command once from another directory (help, models, train, evaluate, sharpen an image and a
video, upscale, stream, export as a folder and as StableHLO run by `load_stablehlo`, and
import-weights where ../shared/weights is present).

This catches a dependency that only the test extra brings (flatbuffers came with onnxruntime)
and data files missing from the package. It builds the environment (about two minutes with
pip's cache): run the rest of the suite without it with ``-m "not install"``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.install

REPO = Path(__file__).resolve().parents[1]
RLFN_WEIGHTS = REPO.parent / "shared" / "weights" / "rlfn_x2.pth"
# A config file as a user writes one: a tiny student trained for two steps on a folder here.
TINY_CONFIG = """
from kdjax import config as config_lib
from kdjax.data import folder_source_config
from kdjax.models import model_config


def get_config():
    config = config_lib.base_config()
    config.model = model_config("realtime", width=4, num_blocks=2)
    config.data.train_source = folder_source_config("images")
    config.data.eval_source = folder_source_config("images")
    config.data.patch_size = 16
    config.batch_size = 2
    config.num_steps = 2
    config.optim.warmup_steps = 0
    config.log_every_steps = 1
    config.eval.every_steps = 2
    config.eval.num_grid_images = 1
    config.checkpoint.every_steps = 2
    config.checkpoint.async_save = False
    return config
"""


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh environment's bin folder, an empty working directory elsewhere)."""
    root = tmp_path_factory.mktemp("plain")
    # Built from a copy, so the build's own files (build/, *.egg-info) stay out of the repository.
    source = root / "source"
    shutil.copytree(
        REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "__pycache__")
    )
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=300)
    bin_dir = root / "venv" / "bin"
    install = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", str(source)], capture_output=True, text=True, timeout=1200
    )
    assert install.returncode == 0, install.stderr[-3000:]
    work = root / "work"
    (work / "images").mkdir(parents=True)
    for index in range(2):
        Image.fromarray(np.random.default_rng(index).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
            work / "images" / f"photo_{index}.png"
        )
    return bin_dir, work


def _run(plain: tuple[Path, Path], *args: str, **kwargs) -> subprocess.CompletedProcess:
    bin_dir, work = plain
    # The environment's own kdjax, with nothing of this one's (no PYTHONPATH, no repository cwd).
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(bin_dir / args[0]), *args[1:]], cwd=work, capture_output=True, timeout=600, env=env, **kwargs
    )
    assert result.returncode == 0, (args, result.stderr[-3000:])
    return result


def test_help_and_models(plain):
    assert "sharpen" in _run(plain, "kdjax", "--help", text=True).stdout
    assert "--input" in _run(plain, "kdjax", "sharpen", "-h", text=True).stdout
    models = _run(plain, "kdjax", "models", text=True).stdout
    for name, scale in (("rep_kd_x2", "x2"), ("rep_kd_sharpen_x2", "x1"), ("rep_videocall", "x1"), ("swin_light_x2_upscale", "x2")):
        assert re.search(rf"^{name} .* {scale} ", models, re.M), models


def test_sharpen_an_image_and_a_video_and_upscale(plain):
    _, work = plain
    assert _run(plain, "kdjax", "sharpen", "--input=images/photo_0.png", "--output=sharp.png", text=True).stdout.startswith(
        "Wrote sharp.png (48x40 -> 48x40, x1)"
    )
    _run(plain, "kdjax", "upscale", "--input=images", "--output=big", text=True)
    assert Image.open(work / "big" / "photo_1.png").size == (96, 80)
    with av.open(str(work / "clip.mp4"), "w") as output:
        stream = output.add_stream("libx264", rate=24)
        stream.height, stream.width = 32, 48
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 24)
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((32, 48, 3), 40 * index, np.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 24)
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    out = _run(plain, "kdjax", "sharpen", "--input=clip.mp4", "--output=clip_sharp.mp4", text=True).stdout
    assert out.startswith("Wrote clip_sharp.mp4 (3 frames, 48x32 -> 48x32, x1)"), out


def test_stream(plain):
    frames = np.random.default_rng(0).integers(0, 256, (3, 18, 32, 3), dtype=np.uint8)
    result = _run(plain, "kdjax", "stream", "--size=32x18", input=frames.tobytes())
    assert len(result.stdout) == frames.nbytes and b"Streamed 3 frames" in result.stderr


def test_train_evaluate_and_export_as_a_folder_and_as_stablehlo(plain):
    _, work = plain
    (work / "tiny.py").write_text(TINY_CONFIG)
    _run(plain, "kdjax", "train", "--config=tiny.py", "--workdir=run")
    assert "PSNR" in _run(plain, "kdjax", "evaluate", "--model=run", "--eval_dir=images", text=True).stdout
    _run(plain, "kdjax", "export", "--model=run", "--which=latest", "--output=model")
    assert (work / "model" / "params.msgpack").is_file()
    _run(plain, "kdjax", "sharpen", "--model=model", "--input=images/photo_0.png", "--output=from_folder.png")
    _run(plain, "kdjax", "export", "--model=sharpen_x2", "--format=stablehlo", "--output=sharpen.stablehlo")
    script = (
        "import numpy as np; from kdjax.serving.export import load_stablehlo; "
        "out = load_stablehlo('sharpen.stablehlo')(np.full((1, 20, 24, 3), 0.5, np.float32)); print(out.shape)"
    )
    assert _run(plain, "python", "-c", script, text=True).stdout.strip() == "(1, 20, 24, 3)"


@pytest.mark.skipif(not RLFN_WEIGHTS.is_file(), reason="the authors' RLFN checkpoint is not in ../shared/weights")
def test_import_weights(plain):
    _, work = plain
    _run(plain, "kdjax", "import-weights", "--arch=rlfn", f"--input={RLFN_WEIGHTS}", "--output=rlfn_x2")
    assert (work / "rlfn_x2" / "params.msgpack").is_file()
