"""Tests for kdjax.torch_import and the ported RLFN / BSRN: the torch-free checkpoint reader on
files written here by hand in the torch zip format, the PyTorch -> Flax layouts against numpy
references of PyTorch's semantics, the converter's checks, the modules' contract, and the
headline: the authors' checkpoints reproduce their Set5 figures."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import evaluation, torch_import
from kdjax.models.bsrn import BSRN, BSConvU
from kdjax.models.layers import resize_bilinear_like_torch
from kdjax.models.rlfn import RLFN
from kdjax.models.layers import pixel_shuffle
from kdjax.models.students import DepthwiseConv3x3

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "weights"
SET5_DIR = SHARED / "data" / "Set5"

# The authors' checkpoints: file, parameter count and Set5 PSNR / SSIM (Y) from the README
# of the weights folder.
CHECKPOINTS = {
    "rlfn": ("rlfn_x2.pth", 526_856, 38.08, 0.9607),
    "rlfn_s": ("rlfn_s_x2.pth", 454_620, 38.06, 0.9608),
    "bsrn": ("bsrn_x2.pth", 331_628, 38.10, 0.9610),
}


# --- A hand-written torch.save file: pickle protocol 2 opcodes and the zip layout. ---------


class _PickleWriter:
    """Emits the pickle opcodes torch.save writes for a (possibly wrapped) state dict."""

    def __init__(self):
        self.data = bytearray(b"\x80\x02")  # PROTO 2

    def global_(self, module: str, name: str) -> None:
        self.data += b"c" + f"{module}\n{name}\n".encode()

    def text(self, value: str) -> None:
        encoded = value.encode()
        self.data += b"X" + struct.pack("<I", len(encoded)) + encoded

    def integer(self, value: int) -> None:
        self.data += b"J" + struct.pack("<i", value)

    def int_tuple(self, values) -> None:
        self.data += b"("
        for value in values:
            self.integer(value)
        self.data += b"t"

    def empty_ordered_dict(self) -> None:
        self.global_("collections", "OrderedDict")
        self.data += b")R"  # EMPTY_TUPLE, REDUCE: OrderedDict()

    def tensor(self, storage_type: str, key: str, numel: int, offset: int, shape, strides) -> None:
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.data += b"("
        self.data += b"("
        self.text("storage")
        self.global_("torch", storage_type)
        self.text(key)
        self.text("cpu")
        self.integer(numel)
        self.data += b"tQ"  # TUPLE, BINPERSID: the storage
        self.integer(offset)
        self.int_tuple(shape)
        self.int_tuple(strides)
        self.data += b"\x89"  # requires_grad=False
        self.empty_ordered_dict()  # backward hooks
        self.data += b"tR"

    def state_dict(self, tensors) -> None:
        self.empty_ordered_dict()
        self.data += b"("
        for name, spec in tensors.items():
            self.text(name)
            self.tensor(*spec)
        self.data += b"u"  # SETITEMS


def _write_torch_file(path: Path, tensors, storages, wrapped=None, pickled=None) -> Path:
    """Writes `tensors` {name: (storage_type, key, numel, offset, shape, strides)} viewing
    `storages` {key: np.ndarray} as torch.save does. `wrapped` {key: tensors} writes a dict
    of state dicts instead (BasicSR); `pickled` replaces data.pkl altogether."""
    if pickled is None:
        writer = _PickleWriter()
        if wrapped:
            writer.data += b"}"  # EMPTY_DICT
            for key, wrapped_tensors in wrapped.items():
                writer.text(key)
                writer.state_dict(wrapped_tensors)
                writer.data += b"s"  # SETITEM
        else:
            writer.state_dict(tensors)
        pickled = bytes(writer.data) + b"."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        for key, storage in storages.items():
            little_endian = storage.astype(storage.dtype.newbyteorder("<"))
            archive.writestr(f"archive/data/{key}", little_endian.tobytes())
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/byteorder", "little")
    return path


def _example_file(tmp_path: Path) -> Path:
    storages = {
        "0": np.arange(24, dtype=np.float32),
        "1": np.array([0.5, -1.25, 3.0, 65504.0], np.float16),
        "2": np.array([7, -(2**40)], np.int64),
    }
    tensors = {
        "conv.weight": ("FloatStorage", "0", 24, 0, (2, 3, 4), (12, 4, 1)),
        # A transposed view and an offset strided view of the same storage.
        "transposed": ("FloatStorage", "0", 24, 0, (4, 3), (1, 4)),
        "strided": ("FloatStorage", "0", 24, 5, (3,), (2,)),
        "half": ("HalfStorage", "1", 4, 0, (2, 2), (2, 1)),
        "steps": ("LongStorage", "2", 2, 1, (), ()),
    }
    return _write_torch_file(tmp_path / "model.pth", tensors, storages)


def test_reader_reads_strides_offsets_and_dtypes(tmp_path):
    state = torch_import.read_state_dict(_example_file(tmp_path))
    values = np.arange(24, dtype=np.float32)
    assert list(state) == ["conv.weight", "transposed", "strided", "half", "steps"]
    np.testing.assert_array_equal(state["conv.weight"], values.reshape(2, 3, 4))
    np.testing.assert_array_equal(state["transposed"], values[:12].reshape(3, 4).T)
    np.testing.assert_array_equal(state["strided"], [5.0, 7.0, 9.0])
    assert state["half"].dtype == np.float16
    np.testing.assert_array_equal(state["half"], [[0.5, -1.25], [3.0, 65504.0]])
    assert state["steps"].shape == () and state["steps"] == -(2**40)
    assert all(array.flags.writeable for array in state.values())  # copies, not views


def test_reader_unwraps_basicsr_and_dataparallel(tmp_path):
    storages = {"0": np.array([1.0, 2.0], np.float32)}
    tensors = {"module.conv.bias": ("FloatStorage", "0", 2, 0, (2,), (1,))}
    path = _write_torch_file(tmp_path / "net_g.pth", None, storages, wrapped={"params": tensors})
    state = torch_import.read_state_dict(path)
    assert list(state) == ["conv.bias"]
    np.testing.assert_array_equal(state["conv.bias"], [1.0, 2.0])
    # BasicSR's EMA weights are preferred when the run kept them.
    ema = {"conv.bias": ("FloatStorage", "0", 2, 1, (1,), (1,))}
    wrapped = {"params": tensors, "params_ema": ema}
    path = _write_torch_file(tmp_path / "ema.pth", None, storages, wrapped=wrapped)
    np.testing.assert_array_equal(torch_import.read_state_dict(path)["conv.bias"], [2.0])


def test_reader_refuses_code_and_foreign_files(tmp_path):
    writer = _PickleWriter()
    writer.global_("os", "system")
    writer.text("echo unsafe")
    writer.data += b"\x85R."  # TUPLE1, REDUCE, STOP: os.system("echo unsafe")
    path = _write_torch_file(tmp_path / "evil.pth", {}, {}, pickled=bytes(writer.data))
    with pytest.raises(ValueError, match=r"os\.system, which a plain state dict never needs"):
        torch_import.read_state_dict(path)

    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(b"\x80\x02\x8a\x0alegacy torch format")
    with pytest.raises(ValueError, match="not a zip-format torch.save file"):
        torch_import.read_state_dict(legacy)

    storages = {"0": np.zeros(4, np.float32)}
    outside = {"w": ("FloatStorage", "0", 4, 2, (2, 2), (2, 1))}
    path = _write_torch_file(tmp_path / "corrupt.pth", outside, storages)
    with pytest.raises(ValueError, match="reaches outside its storage"):
        torch_import.read_state_dict(path)


# --- Layouts: PyTorch semantics written out in numpy. ---------------------------------------


def _torch_conv2d(x, weight, bias, stride=1, padding=0, groups=1):
    """torch.nn.functional.conv2d in numpy: NCHW input, OIHW weight, cross-correlation,
    zero padding, `groups` groups of input channels."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_channels, group_in, kernel_h, kernel_w = weight.shape
    out_h = (x.shape[2] - kernel_h) // stride + 1
    out_w = (x.shape[3] - kernel_w) // stride + 1
    group_out = out_channels // groups
    out = np.zeros((x.shape[0], out_channels, out_h, out_w))
    for o in range(out_channels):
        first = (o // group_out) * group_in
        for row in range(kernel_h):
            for col in range(kernel_w):
                window = x[:, first : first + group_in, row : row + stride * out_h : stride,
                           col : col + stride * out_w : stride]
                out[:, o] += np.einsum("nihw,i->nhw", window, weight[o, :, row, col])
        if bias is not None:
            out[:, o] += bias[o]
    return out


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def _flax_params(weight, bias=None):
    kernel = torch_import._to_flax_layout(weight, 2 if weight.shape[2:] == (1, 1) else 4)
    params = {"kernel": jnp.asarray(kernel)}
    if bias is not None:
        params["bias"] = jnp.asarray(bias)
    return {"params": params}


@pytest.mark.parametrize(
    "module, in_channels, out_channels, kernel_size, stride, padding, groups",
    [
        (lambda: flax.linen.Conv(5, (3, 3), padding=1), 3, 5, 3, 1, 1, 1),
        (lambda: flax.linen.Dense(4), 6, 4, 1, 1, 0, 1),
        (lambda: DepthwiseConv3x3(), 4, 4, 3, 1, 1, 4),
        (lambda: flax.linen.Conv(4, (3, 3), strides=2, padding=0, feature_group_count=4),
         4, 4, 3, 2, 0, 4),
    ],
    ids=["conv3x3", "conv1x1_as_dense", "depthwise", "depthwise_stride2_unpadded"],
)
def test_converted_kernels_compute_torch_convolutions(
    module, in_channels, out_channels, kernel_size, stride, padding, groups
):
    rng = np.random.default_rng(0)
    weight_shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
    weight = rng.normal(size=weight_shape).astype(np.float32)
    bias = rng.normal(size=out_channels).astype(np.float32)
    x = rng.normal(size=(2, in_channels, 9, 8)).astype(np.float32)
    expected = _torch_conv2d(x, weight, bias, stride, padding, groups)
    actual = module().apply(_flax_params(weight, bias), jnp.asarray(_nhwc(x)))
    np.testing.assert_allclose(actual, _nhwc(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0)])
def test_bsconvu_matches_pointwise_then_depthwise(stride, padding):
    rng = np.random.default_rng(1)
    pointwise = rng.normal(size=(6, 5, 1, 1)).astype(np.float32)
    depthwise = rng.normal(size=(6, 1, 3, 3)).astype(np.float32)
    bias = rng.normal(size=6).astype(np.float32)
    x = rng.normal(size=(1, 5, 11, 10)).astype(np.float32)
    expected = _torch_conv2d(_torch_conv2d(x, pointwise, None), depthwise, bias, stride, padding, 6)
    variables = {
        "params": {
            "pw": _flax_params(pointwise)["params"],
            "dw": _flax_params(depthwise, bias)["params"],
        }
    }
    actual = BSConvU(6, strides=stride, padding=padding).apply(variables, jnp.asarray(_nhwc(x)))
    np.testing.assert_allclose(actual, _nhwc(expected), rtol=1e-5, atol=1e-5)


def test_pixel_shuffle_matches_torch_channel_order():
    factor, channels = 2, 3
    x = np.random.default_rng(2).normal(size=(1, channels * factor**2, 4, 5)).astype(np.float32)
    # torch.nn.PixelShuffle: out[n, c, h*r + i, w*r + j] = in[n, c*r*r + i*r + j, h, w].
    expected = np.zeros((1, channels, 4 * factor, 5 * factor), np.float32)
    for c in range(channels):
        for i in range(factor):
            for j in range(factor):
                expected[:, c, i::factor, j::factor] = x[:, c * factor**2 + i * factor + j]
    np.testing.assert_array_equal(pixel_shuffle(jnp.asarray(_nhwc(x)), factor), _nhwc(expected))


def test_bilinear_resize_matches_torch_interpolate():
    # F.interpolate(tensor([[[[0., 1.]]]]), size=(1, 4), mode="bilinear", align_corners=False)
    ramp = jnp.asarray([0.0, 1.0]).reshape(1, 1, 2, 1)
    resized = resize_bilinear_like_torch(ramp, (1, 4))
    np.testing.assert_allclose(resized[0, 0, :, 0], [0.0, 0.25, 0.75, 1.0])
    # When enlarging, PyTorch's clamped half-pixel sampling equals an unantialiased triangle
    # filter whose weights are renormalised at the border (jax.image.resize).
    x = jnp.asarray(np.random.default_rng(3).normal(size=(1, 5, 7, 2)), jnp.float32)
    expected = jax.image.resize(x, (1, 17, 23, 2), "linear", antialias=False)
    np.testing.assert_allclose(resize_bilinear_like_torch(x, (17, 23)), expected, atol=1e-5)


# --- The converter and the modules. ---------------------------------------------------------


def _param_shapes(model):
    """The model's variables as ShapeDtypeStructs, traced without compiling anything."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3))))


def _torch_layout_state_dict(arch: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A random state dict with the authors' names and PyTorch layouts for `arch`."""
    spec = torch_import.ARCHITECTURES[arch]
    shapes = _param_shapes(spec.module(**spec.fields))["params"]
    rng = np.random.default_rng(seed)
    state = {}
    for path, leaf in flax.traverse_util.flatten_dict(shapes).items():
        if len(leaf.shape) == 4:  # HWIO -> OIHW
            shape = (leaf.shape[3], leaf.shape[2], leaf.shape[0], leaf.shape[1])
        elif len(leaf.shape) == 2:  # Dense (I, O) -> 1x1 conv (O, I, 1, 1)
            shape = (leaf.shape[1], leaf.shape[0], 1, 1)
        else:
            shape = leaf.shape
        state[torch_import._torch_key(path, spec)] = rng.normal(size=shape).astype(np.float32)
    return state


def test_converter_maps_names_and_layouts():
    state = _torch_layout_state_dict("bsrn")
    model, params = torch_import.convert_state_dict("bsrn", state)
    assert isinstance(model, BSRN) and model.features == 64 and model.scale == 2
    hwio = (2, 3, 1, 0)
    pairs = [
        (params["fea_conv"]["pw"]["kernel"], state["fea_conv.pw.weight"][:, :, 0, 0].T),
        (params["block_7"]["esa"]["conv2"]["dw"]["kernel"],
         state["B8.esa.conv2.dw.weight"].transpose(hwio)),
        (params["block_0"]["cca"]["expand"]["bias"], state["B1.cca.conv_du.2.bias"]),
        (params["upsampler"]["kernel"],
         state["upsampler.upsampleOneStep.0.weight"].transpose(hwio)),
    ]
    for converted, original in pairs:
        np.testing.assert_array_equal(converted, original)


def test_converter_rejects_incomplete_extra_or_misshaped_tensors():
    state = _torch_layout_state_dict("rlfn_s")
    missing = {key: value for key, value in state.items() if key != "block_6.esa.conv3.bias"}
    with pytest.raises(ValueError, match=r"lacks 1 tensor \('block_6.esa.conv3.bias'\)"):
        torch_import.convert_state_dict("rlfn_s", missing)
    with pytest.raises(ValueError, match=r"has 1 tensor \('extra.weight'\) that rlfn_s does not"):
        torch_import.convert_state_dict("rlfn_s", {**state, "extra.weight": np.zeros(1)})
    misshaped = {**state, "conv_1.weight": np.zeros((52, 3, 3, 3), np.float32)}
    with pytest.raises(ValueError, match=r"'conv_1.weight' of shape \(52, 3, 3, 3\) does not fit"):
        torch_import.convert_state_dict("rlfn_s", misshaped)
    with pytest.raises(ValueError, match="Unknown architecture 'edsr'"):
        torch_import.convert_state_dict("edsr", state)


@pytest.mark.parametrize(
    "model", [RLFN(features=8, num_blocks=2), BSRN(features=16, num_blocks=1)], ids=["rlfn", "bsrn"]
)
def test_modules_keep_the_model_contract(model):
    assert (model.role, model.scale, model.size_multiple) == ("teacher", 2, 1)
    assert model.feature_names == tuple(f"block_{index}" for index in range(model.num_blocks))
    shapes = _param_shapes(model)
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    # Random parameters drawn on the host: compiling `init` would cost more than the test.
    rng = np.random.default_rng(4)
    variables = jax.tree.map(
        lambda leaf: jnp.asarray(rng.normal(0, 0.2, leaf.shape), jnp.float32), shapes
    )
    forward = jax.jit(lambda v, x: model.apply(v, x, return_features=True))
    # An odd size, and one below what the attention's pooling needs (edge-padded inside).
    for height, width in [(19, 23), (1, 7)]:
        x = jnp.full((2, height, width, 3), 0.5)
        output, features = forward(variables, x)
        assert output.shape == (2, 2 * height, 2 * width, 3) and output.dtype == jnp.float32
        assert {name: f.shape for name, f in features.items()} == {
            name: (2, height, width, model.features) for name in model.feature_names
        }
    bf16 = jax.jit(model.clone(dtype=jnp.bfloat16).apply)(variables, x)
    assert bf16.dtype == jnp.float32
    np.testing.assert_allclose(bf16, output, atol=0.05 * float(jnp.abs(output).max()))


# --- The authors' checkpoints. ---------------------------------------------------------------


def _checkpoint(arch: str) -> Path:
    path = WEIGHTS / CHECKPOINTS[arch][0]
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


@pytest.mark.parametrize("arch", list(CHECKPOINTS))
def test_reader_reads_the_authors_checkpoints(arch):
    state = torch_import.read_state_dict(_checkpoint(arch))
    assert sum(array.size for array in state.values()) == CHECKPOINTS[arch][1]
    assert {array.dtype for array in state.values()} == {np.dtype(np.float32)}
    config, params = torch_import.import_checkpoint(arch, _checkpoint(arch))
    fields = dict(torch_import.ARCHITECTURES[arch].fields)
    assert config == {"name": arch, "dtype": "float32", "overrides": fields}
    assert sum(leaf.size for leaf in jax.tree.leaves(params)) == CHECKPOINTS[arch][1]


@pytest.mark.parametrize("arch", list(CHECKPOINTS))
def test_imported_checkpoints_reproduce_the_authors_set5_figures(arch, tmp_path):
    """`kdjax import-weights` then `kdjax evaluate` on Set5 (upscale x2, PSNR/SSIM on Y, 2 px
    crop, the inputs made by kdjax's MATLAB bicubic on 8-bit images) give the authors' figures."""
    if not SET5_DIR.is_dir():
        pytest.skip(f"{SET5_DIR} is not available")
    folder = torch_import.import_to_folder(arch, _checkpoint(arch), tmp_path / arch)
    results = evaluation.evaluate_workdir(folder, eval_dirs=[str(SET5_DIR)])["Set5"]
    _, _, psnr_reference, ssim_reference = CHECKPOINTS[arch]
    assert results["model"]["psnr_y"] == pytest.approx(psnr_reference, abs=0.05)
    assert results["model"]["ssim_y"] == pytest.approx(ssim_reference, abs=5e-4)
    assert results["input"]["psnr_y"] == pytest.approx(33.66, abs=0.02)  # the published bicubic row


# --- Hostile and damaged checkpoints: one sentence each, nothing inflated before it is checked. ----


def _save_state_dict(path: Path, state: dict[str, np.ndarray]) -> Path:
    """Writes `state` as torch.save would, one float32 storage per tensor."""
    tensors, storages = {}, {}
    for index, (name, array) in enumerate(state.items()):
        array = np.ascontiguousarray(array, np.float32)
        storages[str(index)] = array.ravel()
        strides = tuple(stride // array.itemsize for stride in array.strides)
        tensors[name] = ("FloatStorage", str(index), array.size, 0, array.shape, strides)
    return _write_torch_file(path, tensors, storages)


def _with_zero_entry(source: Path, path: Path, entry: str, size: int) -> Path:
    """A copy of the checkpoint `source` whose storage `entry` is replaced by `size` deflated zero
    bytes, its data.pkl declaring that many elements: a consistent file, only far too large."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as archive:
        for info in original.infolist():
            if info.filename == entry:
                deflated = zipfile.ZipInfo(entry)
                deflated.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(deflated, "w", force_zip64=True) as file:
                    for _ in range(size >> 20):
                        file.write(bytes(1 << 20))
            elif info.filename.endswith("data.pkl"):
                old_numel = original.getinfo(entry).file_size // 4
                pickled = original.read(info).replace(
                    b"J" + struct.pack("<i", old_numel) + b"tQ", b"J" + struct.pack("<i", size // 4) + b"tQ", 1
                )
                archive.writestr(info, pickled)
            else:
                archive.writestr(info, original.read(info))
    return path


def test_a_storage_far_larger_than_its_tensors_is_refused_before_it_is_inflated(tmp_path):
    state = _torch_layout_state_dict("rlfn_s")
    normal = _save_state_dict(tmp_path / "normal.pth", state)
    assert torch_import.import_checkpoint("rlfn_s", normal)[0]["name"] == "rlfn_s"
    # Storage 0 (conv_1.weight) becomes 64 MiB of deflated zeros (64 KiB in the file): its
    # tensor still has the right shape, but the storages hold far more than rlfn_s needs.
    first = next(iter(state))
    bloated = _with_zero_entry(normal, tmp_path / "bloated.pth", "archive/data/0", 64 << 20)
    assert bloated.stat().st_size < normal.stat().st_size + (1 << 17)
    with pytest.raises(ValueError, match=rf"storage entry archive/data/0 holds 67108864 bytes of which its tensors use "
                       rf"{state[first].size * 4}") as error:
        torch_import.import_checkpoint("rlfn_s", bloated)
    assert "\n" not in str(error.value) and str(error.value).count(". ") == 0


def test_declared_sizes_views_and_damage_are_checked_before_anything_is_read(tmp_path):
    storages = {"0": np.zeros(4, np.float32)}
    # data.pkl says 1,000,000 elements; the zip header says 16 bytes.
    lying = _write_torch_file(tmp_path / "lying.pth", {"w": ("FloatStorage", "0", 10**6, 0, (4,), (1,))}, storages)
    with pytest.raises(ValueError, match=r"storage entry archive/data/0 of 16 bytes where data.pkl describes 1000000"):
        torch_import.read_state_dict(lying)
    # A zero-stride view of a huge shape (the 642-byte file): refused by its element count
    # before anything is materialised, with or without an architecture.
    huge = {"w": ("FloatStorage", "0", 4, 0, (1 << 20, 1 << 20), (0, 0))}
    repeated = _write_torch_file(tmp_path / "repeated.pth", huge, storages)
    for read in (torch_import.read_state_dict, lambda path: torch_import.import_checkpoint("rlfn_s", path)):
        with pytest.raises(ValueError, match=r"'w' .* repeats the 4 elements of its storage archive/data/0 as 10995"):
            read(repeated)
    # A view of the right size but the wrong shape for the architecture: refused by name and shape.
    state = _torch_layout_state_dict("rlfn_s")
    state["conv_1.weight"] = np.zeros((52, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"misshaped.pth tensor 'conv_1.weight' of shape \(52, 3, 3, 3\) does not fit"):
        torch_import.import_checkpoint("rlfn_s", _save_state_dict(tmp_path / "misshaped.pth", state))

    # A flipped byte in a storage: its CRC no longer matches.
    damaged = tmp_path / "damaged.pth"
    data = bytearray(_save_state_dict(tmp_path / "ok.pth", {"w": np.arange(8, dtype=np.float32)}).read_bytes())
    data[data.index(np.arange(8, dtype=np.float32).tobytes()) + 5] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"damaged.pth is damaged \(Bad CRC-32 for file 'archive/data/0'\); download"):
        torch_import.read_state_dict(damaged)

    # A pickle that calls a storage class itself (torch.FloatStorage()) instead of naming it.
    writer = _PickleWriter()
    writer.global_("torch", "FloatStorage")
    writer.data += b")R."  # EMPTY_TUPLE, REDUCE, STOP
    called = _write_torch_file(tmp_path / "called.pth", {}, {}, pickled=bytes(writer.data))
    with pytest.raises(ValueError, match=r"called.pth builds a torch.FloatStorage itself, which torch.save never"):
        torch_import.read_state_dict(called)


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    state = _torch_layout_state_dict("rlfn_s")
    state["block_2.c1_r.bias"][3] = np.nan
    path = _save_state_dict(tmp_path / "diverged.pth", state)
    with pytest.raises(ValueError, match=r"diverged.pth tensor 'block_2.c1_r.bias' holds NaN or infinite values"):
        torch_import.import_checkpoint("rlfn_s", path)
