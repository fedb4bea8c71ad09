"""LowRankLinear: W (out x in) ~= U @ V^T as two thin factors, run by one fused kernel.

y = (x @ V) @ U^T + bias costs rank * (in + out) MACs instead of in * out. The fused op takes row
blocks of x through both products while the rank-r intermediate stays in L1 (two phases in one native
call at batch 1), and is bit-identical to running the two factors as separate layers (`unfused`).

Fine-tuning: `make_trainable()` (or `trainable=True` on the constructors, or `edgeopt.low_rank(...,
trainable=True)`) adds float32 parameters `u` (out, rank), `vt` (rank, in) and `bias`, starting at the
stored factors. In training mode the layer is then two plain torch matmuls with autograd; in eval mode it
runs the fused kernel on buffers repacked from the parameters whenever they have changed (checked by
their version counters; `.eval()` and `state_dict()` repack too, so a graph compiled after `.eval()` and
the saved buffers always match the parameters). `freeze()` repacks and drops the parameters
(inference-only again). Training sees the float factors; the kernel sees them rounded to the storage
dtype (fp16, or int8 with dynamic u8 activations), so eval output differs from train-mode output by that
rounding only.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from edgeopt import kernels, ops
from edgeopt._native import _C
from edgeopt.nn._packed import PackedBuffers
from edgeopt.nn._grad import clamp, float_twin_gradient, needs_grad
from edgeopt.nn._qparams import activation_bounds, quantize_weight_per_channel
from edgeopt.nn.half_linear import WEIGHT_DTYPES, load_packed, pack_float

# fp32 / fp16: float kernels, fused by row blocks. int8: the u8 x s8 kernels of QuantLinear (7-bit
# per-channel weights, dynamic u8 activations at both stages), the two stages in one native call.
LOW_RANK_DTYPES = (*WEIGHT_DTYPES, "int8")


def check_weight_dtype(owner: str, weight_dtype: str) -> None:
    if weight_dtype not in LOW_RANK_DTYPES:
        raise ValueError(f"edgeopt {owner}: weight_dtype must be one of {LOW_RANK_DTYPES}, got {weight_dtype!r}")


def _pack(weight: torch.Tensor, bias: torch.Tensor | None, weight_dtype: str) -> torch.Tensor:
    if weight_dtype != "int8":
        return pack_float("LowRankLinear", weight, bias, weight_dtype)
    q, scale = quantize_weight_per_channel(weight)
    b = None if bias is None else bias.detach().to(torch.float32).contiguous().numpy()
    return torch.from_numpy(_C.qs8_pack(q.numpy(), scale.numpy(), b))


def _unpack(packed: torch.Tensor, weight_dtype: str) -> tuple[torch.Tensor, torch.Tensor]:
    if weight_dtype != "int8":
        w, bias = _C.fw_unpack(packed.numpy())
        return torch.from_numpy(w).float(), torch.from_numpy(bias)
    q, scale, bias = _C.qs8_unpack(packed.numpy())
    return torch.from_numpy(q).float() * torch.from_numpy(scale)[:, None], torch.from_numpy(bias)


def choose_rank(singular_values: torch.Tensor, rank: int | float | None = None,
                energy: float | None = None) -> int:
    """Rank from an explicit count (an int), a fraction of min(in, out) (a float in (0, 1]: 1.0 is the full
    rank), or the explained energy (smallest r with sum(s[:r]^2) >= energy * sum(s^2))."""
    full = singular_values.numel()
    if (rank is None) == (energy is None):
        raise ValueError("edgeopt low rank: give exactly one of rank= or energy=")
    if rank is not None:
        if isinstance(rank, float) and 0.0 < rank <= 1.0:
            return max(1, int(round(rank * full)))
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= full:
            raise ValueError(f"edgeopt low rank: rank must be an int in [1, {full}] or a fraction in (0, 1] of it, "
                             f"got {rank!r}")
        return rank
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"edgeopt low rank: energy must be in (0, 1], got {energy!r}")
    e = singular_values.double().pow(2)
    total = float(e.sum())
    if total == 0.0:
        return 1
    cum = torch.cumsum(e, 0) / total
    return min(full, int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype) - 1e-12)) + 1)


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Truncated SVD W ~= U @ Vt with the singular values split evenly (sqrt on each side, which keeps
    both factors' ranges alike -- what fp16 storage or a later int8 quantization want). Returns (U, Vt, s)."""
    w = weight.detach().to(torch.float64)
    u, s, vt = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).float(), (root[:, None] * vt[:rank]).float(), s


class LowRankLinear(PackedBuffers, nn.Module):
    """y = act((x @ V) @ U^T + bias), U: (out, rank), V: (in, rank), stored fp32, fp16 or int8."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, weight_dtype: str = "fp32",
                 activation: str | tuple[float, float] | None = None):
        """An empty (frozen, inference-only) layer: give it weights with load_state_dict, or build it with
        from_float / from_factors."""
        super().__init__()
        check_weight_dtype("LowRankLinear", weight_dtype)
        if in_features < 1 or out_features < 1:
            raise ValueError("edgeopt LowRankLinear: in_features and out_features must be positive")
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(f"edgeopt LowRankLinear: rank must be in [1, {min(in_features, out_features)}], got {rank}")
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.has_bias = bias
        self.weight_dtype = weight_dtype
        self.activation = activation
        self.out_min, self.out_max = activation_bounds(activation)
        self.register_buffer("packed_v", torch.empty(0, dtype=torch.uint8))  # V^T: (rank, in)
        self.register_buffer("packed_u", torch.empty(0, dtype=torch.uint8))  # U: (out, rank) + bias
        self._packed_key = None  # (id, version) of the float parameters the buffers were packed from

    @classmethod
    def from_factors(cls, u: torch.Tensor, vt: torch.Tensor, bias: torch.Tensor | None = None,
                     weight_dtype: str = "fp32",
                     activation: str | tuple[float, float] | None = None,
                     trainable: bool = False) -> "LowRankLinear":
        """From U (out, rank) and V^T (rank, in); trainable=True adds float parameters (see make_trainable)."""
        if u.dim() != 2 or vt.dim() != 2 or u.shape[1] != vt.shape[0]:
            raise ValueError(f"edgeopt LowRankLinear: factors must be U (out, r) and V^T (r, in), got "
                             f"{tuple(u.shape)} and {tuple(vt.shape)}")
        module = cls(vt.shape[1], u.shape[0], u.shape[1], bias is not None, weight_dtype, activation)
        module.packed_v = _pack(vt, None, weight_dtype)
        module.packed_u = _pack(u, bias, weight_dtype)
        return module.make_trainable() if trainable else module

    @classmethod
    def from_float(cls, linear: nn.Linear, rank: int | float | None = None, energy: float | None = None,
                   weight_dtype: str = "fp32",
                   activation: str | tuple[float, float] | None = None,
                   trainable: bool = False) -> "LowRankLinear":
        """Truncated SVD of a float nn.Linear at a given rank (count or fraction of min(in, out)) or energy;
        trainable=True adds float parameters for fine-tuning (see make_trainable)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"edgeopt LowRankLinear.from_float expects nn.Linear, got {type(linear).__name__}")
        s = torch.linalg.svdvals(linear.weight.detach().to(torch.float64))
        r = choose_rank(s, rank, energy)
        u, vt, _ = svd_factors(linear.weight, r)
        return cls.from_factors(u, vt, linear.bias, weight_dtype, activation, trainable)

    # --- fine-tuning: float parameters, repacked into the kernel's buffers for inference ---

    @property
    def trainable(self) -> bool:
        return "u" in self._parameters

    def make_trainable(self) -> "LowRankLinear":
        """Adds float32 parameters u (out, rank), vt (rank, in) and bias (out, if the layer has one), equal
        to the stored factors (fp16 widened, int8 dequantized), so training starts from what the kernel
        computes. Training-mode forward then uses them with autograd; eval-mode forward repacks them into
        the fused kernel's buffers when they have changed. Returns self (no-op if already trainable)."""
        if self.trainable:
            return self
        self._require_weights()
        u, vt, bias = self.factors()
        self.u = nn.Parameter(u.clone().contiguous())
        self.vt = nn.Parameter(vt.clone().contiguous())
        self.register_parameter("bias", nn.Parameter(bias.clone()) if self.has_bias else None)
        self._packed_key = self._param_key()  # the buffers already hold exactly these factors
        return self

    def freeze(self) -> "LowRankLinear":
        """Packs the current float parameters into the kernel's buffers and removes the parameters: the
        layer is inference-only again (state_dict: packed buffers only). Returns self."""
        if self.trainable:
            self.repack()
            for name in ("u", "vt", "bias"):
                delattr(self, name)
            self._packed_key = None
        return self

    def repack(self) -> None:
        """Packs the float parameters into packed_v / packed_u in the layer's weight_dtype (done
        automatically by eval-mode forward and state_dict when the parameters have changed)."""
        if not self.trainable:
            raise RuntimeError("edgeopt LowRankLinear.repack: the layer has no float parameters (it is frozen); "
                               "call make_trainable() first")
        with torch.no_grad():
            for name in ("u", "vt") + (("bias",) if self.bias is not None else ()):
                if not torch.isfinite(getattr(self, name)).all():
                    raise ValueError(f"edgeopt LowRankLinear: parameter {name} contains NaN or Inf (diverged "
                                     "fine-tuning?); cannot pack it for the kernel")
            self.packed_v = _pack(self.vt, None, self.weight_dtype)
            self.packed_u = _pack(self.u, self.bias, self.weight_dtype)
        self._packed_key = self._param_key()

    def train(self, mode: bool = True) -> "LowRankLinear":
        """Switching a trainable layer to eval mode repacks its changed parameters right away (a compiled
        graph does not run the version check in forward, so compile after model.eval())."""
        super().train(mode)
        if not mode:
            self._sync()
        return self

    def _param_key(self) -> tuple:
        return tuple((id(p), p._version, tuple(p.shape)) for p in (self.u, self.vt, self.bias) if p is not None)

    def _sync(self) -> None:
        """Repacks if the float parameters changed since the buffers were packed (optimizer steps and
        load_state_dict bump the version counters; a replaced parameter changes the id)."""
        if self.trainable and self._packed_key != self._param_key():
            if tuple(self.u.shape) != (self.out_features, self.rank) or \
                    tuple(self.vt.shape) != (self.rank, self.in_features):
                raise ValueError(f"edgeopt LowRankLinear: parameters u {tuple(self.u.shape)} / vt "
                                 f"{tuple(self.vt.shape)} no longer match ({self.out_features}, {self.rank}) / "
                                 f"({self.rank}, {self.in_features})")
            self.repack()

    def _float_forward(self, x: torch.Tensor) -> torch.Tensor:
        kernels.check_float_rows("LowRankLinear", x, self.in_features)  # the kernel's device / dtype / shape rules
        return clamp(F.linear(F.linear(x, self.vt), self.u, self.bias), self.out_min, self.out_max)

    def float_twin(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen layer in float torch ops (the factors as stored, the bias, the clamp): forward's gradient."""
        u, vt, bias = self.factors()
        return clamp(F.linear(F.linear(x, vt), u, bias if self.has_bias else None), self.out_min, self.out_max)

    def _require_weights(self) -> None:
        if self.packed_v.numel() == 0 or self.packed_u.numel() == 0:
            raise RuntimeError("edgeopt LowRankLinear has no weights yet: build it with from_float / from_factors "
                               "or load a state_dict")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.trainable and self.training:
            return self._float_forward(x)
        if needs_grad(x):
            if self.training:
                # its factors could train, but they are frozen: say so rather than train around them
                raise RuntimeError("edgeopt LowRankLinear is frozen and cannot pass gradients to its factors: call "
                                   "make_trainable() (or edgeopt.low_rank(..., trainable=True)) to fine-tune it, or "
                                   "run it in eval mode / under torch.no_grad()")
            return float_twin_gradient(self, x)
        if self.trainable and not torch.compiler.is_compiling():
            self._sync()
        if self.weight_dtype == "int8":
            run = ops.qs8_low_rank_linear if torch.compiler.is_compiling() else kernels.qs8_low_rank_linear
        else:
            run = ops.low_rank_linear if torch.compiler.is_compiling() else kernels.low_rank_linear
        return run(x, self.packed_v, self.packed_u, self.in_features, self.out_features, self.out_min, self.out_max)

    def unfused(self, x: torch.Tensor) -> torch.Tensor:
        """The same layer as two separate GEMMs (the reference the fused kernel must equal exactly)."""
        self._sync()
        if self.weight_dtype == "int8":
            t = kernels.quant_linear(x, self.packed_v, self.in_features, self.rank, True, 1.0, 0, -math.inf, math.inf)
            return kernels.quant_linear(t, self.packed_u, self.rank, self.out_features, True, 1.0, 0, self.out_min,
                                        self.out_max)
        t = kernels.fw_linear(x, self.packed_v, self.in_features, self.rank)
        return kernels.fw_linear(t, self.packed_u, self.rank, self.out_features, self.out_min, self.out_max)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(U, V^T, bias) as float32, as stored (fp16 factors widened, int8 factors dequantized); for a
        trainable layer, the current parameters as the kernel will store them."""
        self._sync()
        u, bias = _unpack(self.packed_u, self.weight_dtype)
        vt, _ = _unpack(self.packed_v, self.weight_dtype)
        return u, vt, bias

    def weight_float(self) -> torch.Tensor:
        u, vt, _ = self.factors()
        return (u.double() @ vt.double()).float()

    def macs_per_row(self) -> int:
        return self.rank * (self.in_features + self.out_features)

    def get_extra_state(self) -> dict:
        return {"weight_dtype": self.weight_dtype, "activation": self.activation, "rank": self.rank}

    def set_extra_state(self, state: dict) -> None:
        check_weight_dtype("LowRankLinear", state["weight_dtype"])
        if state["rank"] != self.rank:
            raise ValueError(f"edgeopt LowRankLinear: checkpoint has rank {state['rank']}, this module {self.rank}")
        self.weight_dtype = state["weight_dtype"]
        self.activation = state["activation"]
        self.out_min, self.out_max = activation_bounds(self.activation)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self._sync()  # saved buffers always match the saved parameters
        super()._save_to_state_dict(destination, prefix, keep_vars)

    PACKED_BUFFERS = ("packed_v", "packed_u")

    def _check_packed(self, name: str, buffer: torch.Tensor, state: dict) -> None:
        shape = (self.rank, self.in_features) if name == "packed_v" else (self.out_features, self.rank)
        if state["weight_dtype"] != "int8":
            load_packed("LowRankLinear", buffer, shape, state["weight_dtype"], name)
            return
        info = _C.qs8_packed_info(buffer.numpy())  # header, every packed value, checksum
        if (info["out_features"], info["in_features"]) != shape:
            raise ValueError(f"edgeopt LowRankLinear: {name} is {info['out_features']}x{info['in_features']}, "
                             f"this module expects {shape[0]}x{shape[1]}")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint of a trainable layer (float parameters next to the buffers) makes this layer trainable,
        # so a fine-tuned model round-trips into a freshly built one; a frozen checkpoint loaded into a trainable
        # layer reports the parameters as missing keys (strict) -- call freeze() first to load it.
        if prefix + "u" in state_dict and not self.trainable:
            self.u = nn.Parameter(torch.empty(self.out_features, self.rank))
            self.vt = nn.Parameter(torch.empty(self.rank, self.in_features))
            self.register_parameter("bias", nn.Parameter(torch.empty(self.out_features))
                                    if prefix + "bias" in state_dict else None)
        self._load_packed(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.trainable:
            # buffers saved with the parameters match them (state_dict repacks before saving); without both
            # buffers in the checkpoint, repack at the next eval forward
            both = prefix + "packed_v" in state_dict and prefix + "packed_u" in state_dict
            self._packed_key = self._param_key() if both else None

    def extra_repr(self) -> str:
        act = "" if self.activation in (None, "none") else f", activation={self.activation}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"bias={self.has_bias}, weight_dtype={self.weight_dtype}{act}"
                f"{', trainable' if self.trainable else ''}")
