"""The realistic tasks' evaluation settings are fixed: the same degraded inputs every run, and
the documented strengths (a changed CRF, blur or noise moves the inputs' PSNR by far more than
the tolerance)."""

import numpy as np
import pytest
import skimage.data

from kdjax import data, degradations, tasks
from kdjax.imresize import imresize

# PSNR-Y of the bicubic-upscaled (stream_x2) or raw (videocall) degraded input of the
# astronaut photo's 256x256 top-left crop, under each evaluation setting, measured once.
EXPECTED_INPUT_PSNR = {
    "stream_x2:moderate": 30.29,
    "stream_x2:low_bitrate": 28.57,
    "videocall:default": 31.73,
}


def _y_psnr(a, b):
    def luma(image):
        return 16 + (65.481 * image[..., 0] + 128.553 * image[..., 1] + 24.966 * image[..., 2]) / 255

    error = luma(a.astype(np.float64)) - luma(b.astype(np.float64))
    return 10 * np.log10(255.0**2 / np.mean(error[2:-2, 2:-2] ** 2))


def _eval_input(spec):
    target = np.asarray(skimage.data.astronaut())[:256, :256]
    config = tasks.degradation(spec)
    degraded = degradations.build_degradation(config, train=False)(target, np.random.default_rng([0, 0]))
    return target, degraded if degraded.shape == target.shape else imresize(degraded, output_shape=target.shape[:2])


@pytest.mark.parametrize("spec", sorted(EXPECTED_INPUT_PSNR))
def test_each_evaluation_setting_is_fixed(spec):
    target, first = _eval_input(spec)
    _, second = _eval_input(spec)
    np.testing.assert_array_equal(first, second)
    assert _y_psnr(first, target) == pytest.approx(EXPECTED_INPUT_PSNR[spec], abs=0.05)


def test_strengths_share_the_training_ranges_and_differ_only_in_the_crf():
    moderate, low = tasks.degradation("stream_x2:moderate"), tasks.degradation("stream_x2:low_bitrate")
    assert moderate.h264.eval_crf < low.h264.eval_crf
    low.h264.eval_crf = moderate.h264.eval_crf
    assert low.to_dict() == moderate.to_dict()
    assert tasks.degradation("stream_x2").to_dict() == moderate.to_dict()


def test_stream_x2_downscales_before_it_encodes_and_the_call_keeps_the_size():
    stream = tasks.degradation("stream_x2")
    assert list(stream.ops).index("bicubic") < list(stream.ops).index("h264")
    config = data.default_data_config()
    config.degradation = stream
    assert data.output_scale(config) == 2
    config.degradation = tasks.degradation("videocall")
    assert data.output_scale(config) == 1


def test_unknown_tasks_and_strengths_are_one_sentence():
    with pytest.raises(ValueError, match="Unknown task 'stream'; choose one of stream_x2, videocall"):
        tasks.degradation("stream")
    with pytest.raises(ValueError, match="Task stream_x2 has no strength 'high'; choose one of moderate, low_bitrate"):
        tasks.degradation("stream_x2:high")
