"""Packed weight buffers are checked whenever they come from outside the process: load_state_dict, and
unpickling a whole module (torch.load of a saved model), which restores buffers without load_state_dict.
The check is the core's (header, every packed value, the checksum) plus the module's own (dims, dtype)."""
from __future__ import annotations

import torch


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
                self._check_packed(name, incoming.contiguous(), state)
                setattr(self, name, torch.empty_like(incoming))

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        extra = self.get_extra_state()
        for name in self.PACKED_BUFFERS:
            buffer = self._buffers.get(name)
            if buffer is not None and buffer.numel():
                self._check_packed(name, buffer.contiguous(), extra)
