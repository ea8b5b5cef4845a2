"""Exporting trained models for devices: StableHLO through `jax.export`, and ONNX.

This module owns turning a flax linen image model and its "params" collection into one
self-contained file, and loading the StableHLO file back as a callable. It reads models only
through the contract of `kdjax.models.base` (`scale`, `size_multiple`) and, for ONNX, the
layer names of the residual-trunk students; it never imports training code.

Contract of every exported function: float32 (N, H, W, 3) in [0, 1] -> float32
(N, H * scale, W * scale, 3), exactly what `model.apply({"params": params}, x)` returns.

StableHLO (`export_stablehlo`, `load_stablehlo`)
    The parameters are baked into the module as constants rather than passed as an argument:
    the file is then the whole deployable (no parameter tree to ship, flatten and match
    beside it), XLA may fold weight preprocessing into constants, and the students
    are small (0.07 M parameters, 0.3 MB). Changing weights means exporting again, which
    takes a second. Batch, height and width are symbolic unless fixed. The models
    reflect-pad H, W internally with `jnp.pad(mode="reflect")`, which cannot be traced with a
    symbolic pad length (jax cannot decide `mod(-h, 4) > 0`), so the exported function
    reflect-pads to `size_multiple` itself, concatenating a gathered reflected tail of
    symbolic length; the model then sees a multiple and pads nothing, and the result equals
    `model.apply` on the unpadded input. Symbolic H and W must be >= `size_multiple`, a
    constraint recorded in the module (smaller inputs are rejected when called).

ONNX (`export_onnx`)
    jax2onnx 0.17.1 converts these students correctly (checked: max error 4e-7 against
    kdjax), but it cannot be a dependency of kdjax: it requires orbax-checkpoint<0.11.37
    while kdjax needs >=0.12.8 (pip: ResolutionImpossible), and it pulls in equinox,
    huggingface-hub, netron and orbax-export. jax -> TensorFlow -> tf2onnx would add
    TensorFlow. The ONNX graph is therefore written here from the parameters with the
    `onnx` helper API, for the students made of 3x3 convolutions: the residual-trunk
    `RealtimeCNN` and `ResidualCNN`, and `RepCNN` in its folded form (folded here when given
    unfolded), at any scale: NHWC->NCHW transpose, reflect `Pad` to the shuffle factor,
    `SpaceToDepth`, `Conv`/`Relu`/`PRelu`/`Add`, `DepthToSpace` (CRD, PyTorch's
    pixel-shuffle order), crop, global residual (the input itself, or for an upscaler its
    MATLAB bicubic upscaling: one grouped 5x5 `Conv` over the input mirror-padded by 2 with
    the edge repeated, whose scale**2 output channels per colour are the phases of
    `layers.upscale_bicubic`, then `DepthToSpace`), NCHW->NHWC. `SpaceToDepth` orders channels
    (fh, fw, c) where kdjax's pixel-unshuffle orders them (c, fh, fw), so the first
    convolution's input channels are permuted instead of adding a transpose. The graph
    computes in float32 whatever the model's compute dtype; batch is always dynamic, H and
    W are dynamic unless fixed (then the pad and crop are constants, or absent). Opset 17
    and IR version 8 keep it loadable by onnxruntime >= 1.13 and most device runtimes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax import outputs
from kdjax.models.layers import bicubic_phase_taps
from kdjax.models.students import RealtimeCNN, RepCNN, ResidualCNN

PathLike = str | os.PathLike
ONNX_OPSET = 17
ONNX_IR_VERSION = 8
ONNX_INPUT, ONNX_OUTPUT = "image", "output"


def _check_params(model: nn.Module, params: Any) -> None:
    """Raises a one-sentence error unless `params` is this model's "params" collection."""
    if isinstance(params, Mapping) and set(params) == {"params"}:
        raise ValueError(
            "params is a whole variables dict; pass variables['params'] (the 'params' "
            "collection) instead."
        )
    multiple = model.size_multiple
    probe = jax.ShapeDtypeStruct((1, multiple, multiple, 3), jnp.float32)
    abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x)["params"], probe)
    expected = _leaf_shapes(abstract)
    given = _leaf_shapes(params)
    if given != expected:
        name = min(set(given) ^ set(expected) or {k for k in given if given[k] != expected[k]})
        raise ValueError(
            f"params do not match {type(model).__name__}{_fields(model)} (params{name} is "
            f"{given.get(name, 'missing')}, the model needs {expected.get(name, 'nothing')}); "
            "pass the 'params' collection of this model's own variables."
        )


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in leaves}


def _fields(model: nn.Module) -> str:
    names = ("width", "num_blocks", "shuffle_factor")
    values = [f"{name}={getattr(model, name)}" for name in names if hasattr(model, name)]
    return f"({', '.join(values)})"


def _check_size(name: str, value: int | None, minimum: int) -> None:
    if value is not None and (not isinstance(value, int) or value < minimum):
        raise ValueError(f"{name}={value!r} is invalid; pass an int >= {minimum} or None (any).")


def _reflect_pad(x: jax.Array, axis: int, multiple: int) -> jax.Array:
    """Reflect-pads `axis` at the end to a multiple, also when its size is symbolic.

    Same values as the models' `jnp.pad(mode="reflect")` for sizes >= `multiple` (one
    reflection suffices, the pad being < multiple). jnp.pad cannot trace a symbolic pad
    length, so the reflected tail is gathered and concatenated: XLA fuses the concatenation
    into its consumers, where gathering the whole padded image cost an extra pass.
    """
    size = x.shape[axis]
    if not jax.export.is_symbolic_dim(size):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (0, -size % multiple)
        return jnp.pad(x, pad, mode="reflect") if size % multiple else x
    # Written as padded size - size so that the concatenation's size simplifies to a
    # multiple of `multiple` and the model's own padding is statically a no-op.
    pad_length = multiple * ((size + multiple - 1) // multiple) - size
    tail = jnp.take(x, size - 2 - jax.lax.iota(jnp.int32, pad_length), axis=axis)
    return jnp.concatenate([x, tail], axis=axis)


def export_stablehlo(
    model: nn.Module,
    params: Any,
    path: PathLike,
    *,
    height: int | None = None,
    width: int | None = None,
    batch: int | None = None,
    platforms: Sequence[str] | None = None,
    overwrite: bool = False,
) -> jax.export.Exported:
    """Serializes `model` with `params` baked in to `path`; returns the `Exported`.

    `height`, `width`, `batch` left as None are symbolic (any size; H and W >= the model's
    `size_multiple`, and >= 2 for an upscaler, whose bicubic base mirrors 2 pixels at the
    border); `platforms` (e.g. ("cpu", "cuda")) defaults to the current backend. Models whose
    layers need the image size when traced (the Swin, RLFN and BSRN teachers: attention masks
    and resizes computed from it) export only with fixed `height` and `width`. `path` follows
    `kdjax.outputs` (an existing file is replaced only with `overwrite`).
    """
    multiple = model.size_multiple
    smallest = max(multiple, 2 if model.scale > 1 else 1)
    _check_size("height", height, smallest)
    _check_size("width", width, smallest)
    _check_size("batch", batch, 1)
    _check_params(model, params)
    outputs.check_output(path, overwrite=overwrite)
    scale = model.scale

    def forward(x: jax.Array) -> jax.Array:
        out_height, out_width = x.shape[1] * scale, x.shape[2] * scale
        padded = _reflect_pad(_reflect_pad(x, 1, multiple), 2, multiple)
        return model.apply({"params": params}, padded)[:, :out_height, :out_width]

    dims = {"batch": batch, "height": height, "width": width}
    spec = ", ".join(name if value is None else str(value) for name, value in dims.items())
    constraints = [f"{name} >= {smallest}" for name in ("height", "width") if dims[name] is None]
    shape = jax.export.symbolic_shape(f"{spec}, 3", constraints=constraints)
    try:
        exported = jax.export.export(jax.jit(forward), platforms=platforms)(
            jax.ShapeDtypeStruct(shape, jnp.float32)
        )
    except Exception as error:  # tracing with symbolic sizes fails in many ways; --debug shows which
        if height is not None and width is not None:
            raise
        raise ValueError(
            f"{type(model).__name__} cannot be exported to {path} for any image size, as its layers need a fixed "
            "height and width when traced; export it for one size from Python (export_stablehlo with height= and "
            "width=) or run it with kdjax sharpen."
        ) from error
    with outputs.atomic_file(path) as temporary, open(temporary, "wb") as file:
        file.write(exported.serialize())
    return exported


def load_stablehlo(path: PathLike) -> Callable[[Any], jax.Array]:
    """Loads a file of `export_stablehlo` as a function of the image batch.

    It compiles once per input shape; no kdjax or model code is needed.
    """
    with open(path, "rb") as file:
        data = file.read()
    try:
        exported = jax.export.deserialize(bytearray(data))
    except Exception as error:
        raise ValueError(
            f"{path} is not a serialized jax.export module; pass a file written by "
            "export_stablehlo."
        ) from error
    compiled_call = jax.jit(exported.call)
    expected = exported.in_avals[0].str_short()

    def call(images: Any) -> jax.Array:
        try:
            return compiled_call(images)
        except ValueError as error:  # jax's shape-refinement errors do not name the input.
            array = np.asarray(images)
            shape = f"{array.dtype.name}{list(array.shape)}"
            raise ValueError(
                f"Input {shape} does not fit the exported {expected} (symbolic H and W must "
                "be >= the model's size_multiple); pass float32 NHWC RGB images or export "
                "for this shape."
            ) from error

    return call


def export_onnx(
    model: nn.Module,
    params: Any,
    path: PathLike,
    *,
    height: int | None = None,
    width: int | None = None,
    overwrite: bool = False,
) -> None:
    """Writes an ONNX graph of a 3x3-convolution student with `params` to `path`.

    `height`/`width` None are dynamic (any size >= the model's `size_multiple`, and >= 2 for
    an upscaler); batch is always dynamic. Needs the `onnx` package (the `export` extra).
    `path` follows `kdjax.outputs` (an existing file is replaced only with `overwrite`).
    """
    if not isinstance(model, (RealtimeCNN, ResidualCNN, RepCNN)):
        raise ValueError(
            f"ONNX export supports the realtime, residual and rep students, not {type(model).__name__}; export "
            f"{type(model).__name__} to StableHLO for one image size from Python (export_stablehlo with height= and "
            "width=) or run it with kdjax sharpen."
        )
    _check_params(model, params)
    outputs.check_output(path, overwrite=overwrite)
    if isinstance(model, RepCNN) and not model.folded:
        overrides, params = model.inference_form(params)
        model = model.clone(**overrides)
    smallest = max(model.size_multiple, 2 if model.scale > 1 else 1)
    _check_size("height", height, smallest)
    _check_size("width", width, smallest)
    try:
        import onnx  # pylint: disable=import-outside-toplevel  # the `export` extra: only this exporter needs it
    except ImportError:
        raise ValueError(f"Writing {path} needs the onnx package; install it with pip install 'kdjax[export]'.") from None

    graph = _OnnxGraph(onnx)
    graph.build_student(model, params, height, width)
    proto = graph.model(model.scale, height, width)
    onnx.checker.check_model(proto, full_check=True)
    with outputs.atomic_file(path) as temporary:
        onnx.save(proto, os.fspath(temporary))


class _OnnxGraph:
    """Accumulates nodes and initializers of one ONNX graph (NCHW inside, NHWC at the edges)."""

    def __init__(self, onnx: Any) -> None:
        self.onnx = onnx  # the module, imported by export_onnx only when it is called
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], **attributes))
        return output

    def conv(
        self, name: str, x: str, layer: Mapping[str, Any], input_order: np.ndarray | None = None
    ) -> str:
        """Flax `nn.Conv` (HWIO kernel, SAME padding, odd size) as an ONNX Conv (OIHW)."""
        kernel = np.asarray(layer["kernel"], np.float32).transpose(3, 2, 0, 1)
        if input_order is not None:
            kernel = kernel[:, input_order]
        size = kernel.shape[-1]
        weights = self.constant(f"{name}.kernel", np.ascontiguousarray(kernel))
        bias = self.constant(f"{name}.bias", np.asarray(layer["bias"], np.float32))
        pad = (size - 1) // 2
        return self.node(
            "Conv", [x, weights, bias], name, kernel_shape=[size, size], pads=[pad] * 4
        )

    def prelu(self, name: str, x: str, layer: Mapping[str, Any]) -> str:
        """Flax `nn.PReLU` (one slope for all channels) as an ONNX PRelu."""
        slope = self.constant(f"{name}.slope", np.asarray(layer["negative_slope"], np.float32).reshape(1))
        return self.node("PRelu", [x, slope], name)

    def build_student(self, model: nn.Module, params: Any, height: int | None, width: int | None) -> None:
        """Pad, SpaceToDepth, the student's convolutions, DepthToSpace, crop, global residual."""
        factor = getattr(model, "shuffle_factor", 1)
        scale = model.scale
        x = self.node("Transpose", [ONNX_INPUT], "nchw", perm=[0, 3, 1, 2])
        dynamic = height is None or width is None
        padded = factor > 1 and (dynamic or bool(height % factor or width % factor))
        size = None  # the graph's int64 (H, W), needed to pad and crop a dynamic size
        if padded and dynamic:
            size = self.node("Shape", [x], "height_width", start=2, end=4)
        base = x
        if padded:
            base = self.node("Pad", [x, self._pads(size, factor, height, width)], "padded", mode="reflect")
        low = self.node("SpaceToDepth", [base], "unshuffled", blocksize=factor) if factor > 1 else base
        # SpaceToDepth's channel (fh, fw, c) is pixel_unshuffle's channel (c, fh, fw).
        unshuffle_order = np.arange(3 * factor**2).reshape(3, factor, factor).transpose(1, 2, 0).ravel()
        if isinstance(model, RepCNN):
            residual = self._rep_body(params, low, unshuffle_order, model.num_blocks)
        else:
            residual = self._trunk_body(params, low, unshuffle_order, model.num_blocks)
        if factor * scale > 1:
            residual = self.node("DepthToSpace", [residual], "shuffled", blocksize=factor * scale, mode="CRD")
        if scale > 1:
            base = self._upscale_bicubic(base, scale)
        out = self.node("Add", [base, residual], "sum")
        if padded:
            out = self._crop(out, size, scale, height, width)
        self.node("Transpose", [out], ONNX_OUTPUT, perm=[0, 2, 3, 1])

    def _trunk_body(self, params: Any, low: str, input_order: np.ndarray, num_blocks: int) -> str:
        """`students._residual_trunk`: head conv, residual blocks (conv, ReLU, conv), last conv."""
        y = self.conv("head", low, params["head"], input_order)
        for index in range(num_blocks):
            block = params[f"block_{index}"]
            hidden = self.conv(f"block_{index}.conv_0", y, block["conv_0"])
            hidden = self.node("Relu", [hidden], f"block_{index}.relu")
            update = self.conv(f"block_{index}.conv_1", hidden, block["conv_1"])
            y = self.node("Add", [y, update], f"block_{index}")
        return self.conv("conv_last", y, params["conv_last"])

    def _rep_body(self, params: Any, low: str, input_order: np.ndarray, num_blocks: int) -> str:
        """Folded `RepCNN`: head conv + PReLU, blocks of conv + PReLU, long residual, tail conv."""
        start = self.prelu("head_act", self.conv("head", low, params["head"]["conv"], input_order), params["head_act"])
        y = start
        for index in range(num_blocks):
            y = self.conv(f"block_{index}", y, params[f"block_{index}"]["conv"])
            y = self.prelu(f"block_{index}_act", y, params[f"block_{index}_act"])
        y = self.node("Add", [y, start], "long_residual")
        return self.conv("tail", y, params["tail"]["conv"])

    def _upscale_bicubic(self, x: str, scale: int) -> str:
        """`layers.upscale_bicubic` of NCHW `x`: mirror-pad 2 pixels (edge repeated), one grouped
        5x5 convolution whose output channel (c, py, px) is phase (py, px) of colour c, and
        DepthToSpace (CRD), which puts phase (py, px) of pixel (i, j) at (scale i + py, scale j + px)."""
        for axis in (2, 3):
            first_two = self._slice(x, 0, 2, axis)
            last_two = self._slice(x, -2, None, axis)
            before = [self._slice(first_two, index, index + 1, axis) for index in (1, 0)]
            after = [self._slice(last_two, index, index + 1, axis) for index in (1, 0)]
            x = self.node("Concat", [*before, x, *after], f"mirrored_{axis}", axis=axis)
        taps = bicubic_phase_taps(scale)  # (scale, 5): phase p's weights of input pixels j-2..j+2
        kernel = np.einsum("pi,qj->pqij", taps, taps).reshape(1, scale * scale, 5, 5)
        kernel = np.repeat(kernel, 3, axis=0).reshape(3 * scale * scale, 1, 5, 5).astype(np.float32)
        weights = self.constant("bicubic.kernel", kernel)
        phases = self.node("Conv", [x, weights], "bicubic_phases", kernel_shape=[5, 5], group=3)
        return self.node("DepthToSpace", [phases], "bicubic", blocksize=scale, mode="CRD")

    def _slice(self, x: str, start: int, end: int | None, axis: int) -> str:
        name = f"{x}.slice_{axis}_{start}_{end}"
        starts = self.constant(f"{name}.starts", np.array([start], np.int64))
        ends = self.constant(f"{name}.ends", np.array([np.iinfo(np.int64).max if end is None else end], np.int64))
        axes = self.constant(f"{name}.axes", np.array([axis], np.int64))
        return self.node("Slice", [x, starts, ends, axes], name)

    def _pads(self, size: str | None, factor: int, height: int | None, width: int | None) -> str:
        """ONNX pads (begins then ends of N, C, H, W) reflecting H, W up to a multiple.

        `size` is the graph's int64 (H, W) when either is dynamic, else None.
        """
        if size is None:
            return self.constant(
                "pads", np.array([0, 0, 0, 0, 0, 0, -height % factor, -width % factor], np.int64)
            )
        factor_name = self.constant("factor", np.array([factor], np.int64))
        remainder = self.node("Mod", [size, factor_name], "size_mod_factor")
        missing = self.node("Sub", [factor_name, remainder], "factor_minus_mod")
        pad_end = self.node("Mod", [missing, factor_name], "pad_end")
        zeros = self.constant("pads_begin", np.zeros(6, np.int64))
        return self.node("Concat", [zeros, pad_end], "pads", axis=0)

    def _crop(self, x: str, size: str | None, scale: int, height: int | None, width: int | None) -> str:
        """Crops the (scale times larger) output of a padded input back to scale * (H, W)."""
        if size is None:
            size = self.constant("crop_ends", np.array([height * scale, width * scale], np.int64))
        elif scale > 1:
            size = self.node("Mul", [size, self.constant("scale", np.array([scale], np.int64))], "output_size")
        starts = self.constant("crop_starts", np.zeros(2, np.int64))
        axes = self.constant("crop_axes", np.array([2, 3], np.int64))
        return self.node("Slice", [x, starts, size, axes], "cropped")

    def model(self, scale: int, height: int | None, width: int | None) -> Any:
        helper = self.onnx.helper
        float32 = self.onnx.TensorProto.FLOAT
        shape = ["batch", height or "height", width or "width", 3]
        out_shape = ["batch", *[f"{scale}*{size}" if isinstance(size, str) else scale * size for size in shape[1:3]], 3]
        graph = helper.make_graph(
            self.nodes,
            "kdjax_student",
            [helper.make_tensor_value_info(ONNX_INPUT, float32, shape)],
            [helper.make_tensor_value_info(ONNX_OUTPUT, float32, out_shape if scale > 1 else shape)],
            initializer=self.initializers,
        )
        return helper.make_model(
            graph,
            producer_name="kdjax",
            opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
            ir_version=ONNX_IR_VERSION,
        )
