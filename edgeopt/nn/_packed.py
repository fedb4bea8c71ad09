"""Packed weight buffers are checked whenever they come from outside the process: load_state_dict, and
unpickling a whole module (torch.load of a saved model), which restores buffers without load_state_dict.
The check is the core's (header, every packed value, the checksum) plus the module's own (dims, dtype).
Buffers of packed format version 1 (saved before the checksum existed) are brought to this version as they
load, so saved models keep loading."""
from __future__ import annotations

import torch

from edgeopt._native import _C


def current_format(buffer: torch.Tensor) -> torch.Tensor:
    """`buffer` (uint8, contiguous), or its copy upgraded from packed format version 1."""
    if buffer.dtype != torch.uint8 or buffer.dim() != 1:
        return buffer  # not a pack: the check says why
    upgraded = _C.upgrade_packed(buffer.numpy())
    return buffer if upgraded is None else torch.from_numpy(upgraded)


class PackedBuffers:
    """Mixin of the packed modules: `_check_packed(name, buffer, state)` raises unless `buffer` is a valid packed
    buffer for the buffer `name` of this module with extra state `state` (a dict from get_extra_state)."""

    PACKED_BUFFERS: tuple[str, ...] = ("packed_weight",)

    def _check_packed(self, name: str, buffer: torch.Tensor, state: dict) -> None:
        raise NotImplementedError

    def _load_packed(self, state_dict, prefix: str) -> None:
        """Before the generic copy: check each incoming packed buffer and size ours to it (its length depends on
        the layer's dims and, for sparse layouts, on how many blocks are stored)."""
        extra = state_dict.get(prefix + "_extra_state")
        state = extra if isinstance(extra, dict) else self.get_extra_state()
        for name in self.PACKED_BUFFERS:
            incoming = state_dict.get(prefix + name)
            if incoming is not None:
                incoming = current_format(incoming.contiguous())
                state_dict[prefix + name] = incoming  # load_state_dict passes its own copy of the dict
                self._check_packed(name, incoming, state)
                setattr(self, name, torch.empty_like(incoming))

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        extra = self.get_extra_state()
        for name in self.PACKED_BUFFERS:
            buffer = self._buffers.get(name)
            if buffer is not None and buffer.numel():
                buffer = current_format(buffer.contiguous())
                self._check_packed(name, buffer, extra)
                self._buffers[name] = buffer
