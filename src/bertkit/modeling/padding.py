"""Padding removal as small pure functions: pack the real tokens of a padded batch, and put them back."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Packing:
    """Where the packed tokens of a (B, L) batch came from; what attention needs to re-pad them."""

    indices: torch.Tensor  # (T,) flat positions in the (B*L) batch of the real tokens, row-major
    cu_seqlens: torch.Tensor  # (B+1,) int32: sequence b is tokens[cu_seqlens[b]:cu_seqlens[b+1]]
    max_len: int  # the longest sequence
    batch: int  # B
    length: int  # L
    mask: torch.Tensor  # (B, 1, 1, L) bool, True = real token, for attention over re-padded q/k/v


def attention_mask_4d(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) 1/0 -> (B, 1, 1, L) bool, True = attend. A row with no token at all (fully padded) attends to every
    position instead: its outputs are meaningless but finite, and the same on the SDPA and eager paths (SDPA gives
    NaN for a query that may attend nowhere)."""
    mask = attention_mask.bool()
    mask = mask | ~mask.any(dim=1, keepdim=True)
    return mask[:, None, None, :]


def unpad(hidden: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, Packing]:
    """(B, L, H), (B, L) 1/0 -> (T, H) real tokens in row-major order, and the Packing to undo it.

    Real tokens need not be left-aligned: any 1 in the mask is kept."""
    B, L = attention_mask.shape
    flat = attention_mask.reshape(-1).bool()
    indices = flat.nonzero(as_tuple=True)[0]  # (T,)
    seqlens = attention_mask.sum(dim=1, dtype=torch.int32)  # (B,)
    cu_seqlens = torch.nn.functional.pad(seqlens.cumsum(0, dtype=torch.int32), (1, 0))  # (B+1,)
    packing = Packing(indices, cu_seqlens, int(seqlens.max()), B, L, attention_mask_4d(attention_mask))
    return hidden.reshape(B * L, -1)[indices], packing


def pad(tokens: torch.Tensor, packing: Packing) -> torch.Tensor:
    """(T, ...) packed tokens -> (B, L, ...) with zeros at padded positions."""
    out = tokens.new_zeros(packing.batch * packing.length, *tokens.shape[1:])
    out[packing.indices] = tokens
    return out.view(packing.batch, packing.length, *tokens.shape[1:])
