"""The BERT encoder (Devlin et al. 2018), module for module and name for name as transformers' `BertModel`.

Submodule names are a public contract: `bert.encoder.layer.{i}.attention.self.query` etc. let checkpoints move
to and from transformers with no key map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.config import HIDDEN_ACTS, BertConfig
from bertkit.modeling.outputs import BaseModelOutput
from bertkit.modeling.padding import Packing, attention_mask_4d, pad, unpad
from bertkit.modeling.pretrained import BertPreTrainedModel

ACT2FN = {
    "gelu": nn.GELU(),  # exact erf GELU, the original BERT's
    "gelu_new": nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": nn.GELU(approximate="tanh"),
    "relu": nn.ReLU(),
    "silu": nn.SiLU(),
    "swish": nn.SiLU(),
    "tanh": nn.Tanh(),
}
assert tuple(ACT2FN) == HIDDEN_ACTS  # what config.json may name


def get_activation(name: str) -> nn.Module:
    if name not in ACT2FN:
        raise ValueError(f"hidden_act {name!r} is not supported; choose one of {', '.join(ACT2FN)}")
    return ACT2FN[name]


class BertEmbeddings(nn.Module):
    """word + position + token type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,  # (B, L)
        token_type_ids: torch.Tensor | None = None,  # (B, L)
        position_ids: torch.Tensor | None = None,  # (B, L) or (1, L)
        inputs_embeds: torch.Tensor | None = None,  # (B, L, H)
    ) -> torch.Tensor:  # (B, L, H)
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        L = x.shape[1]
        if L > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"sequence length {L} exceeds max_position_embeddings {self.position_embeddings.num_embeddings}"
            )
        if position_ids is None:
            position_ids = torch.arange(L, device=x.device)[None]  # (1, L)
        # word + type + position, in transformers' order: float addition is not associative.
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention. SDPA by default; the eager path also returns the attention probabilities."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob
        self.scale = self.head_dim**-0.5

    def forward(
        self,
        x: torch.Tensor,  # (B, L, H), or (T, H) packed tokens when `mask` is a Packing
        mask: torch.Tensor | Packing | None,  # (B, 1, 1, L) bool, True = attend; None = no padding
        output_attentions: bool = False,
        cls_only: bool = False,  # queries at position 0 only: the output is (B, 1, H)
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        packing = mask if isinstance(mask, Packing) else None
        # the projections run on real tokens only when packed
        q, k, v = self.query(x[:, :1] if cls_only else x), self.key(x), self.value(x)
        if packing is not None:
            # Attention itself runs re-padded: (T, H) -> (B, L, H), one SDPA call with the padding mask.
            q, k, v, mask = pad(q, packing), pad(k, packing), pad(v, packing), packing.mask
        B, L, H = q.shape  # L: the queries' length (1 with cls_only)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, L, hs)

        q, k, v = heads(q), heads(k), heads(v)
        dropout_p = self.dropout_p if self.training else 0.0
        if output_attentions:
            scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, nh, L, L)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(dim=-1)
            y = F.dropout(probs, dropout_p, self.training) @ v  # (B, nh, L, hs)
        else:
            probs = None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=self.scale)
        y = y.transpose(1, 2).reshape(B, L, H)  # (B, L, H)
        if packing is not None:
            y = y.reshape(B * L, H)[packing.indices]  # (T, H)
        return y, probs


class BertSelfOutput(nn.Module):
    """Attention output projection, dropout, residual and LayerNorm (post-LN, as the original)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, y: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(y)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x, mask, output_attentions=False, cls_only=False):
        y, probs = self.self(x, mask, output_attentions, cls_only)
        return self.output(y, x[:, :1] if cls_only else x), probs


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = get_activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., I)
        return self.intermediate_act_fn(self.dense(x))


class BertOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:  # (..., I) -> (..., H)
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x, mask, output_attentions=False, cls_only=False):
        x, probs = self.attention(x, mask, output_attentions, cls_only)
        return self.output(self.intermediate(x), x), probs


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def forward(self, x, mask, output_hidden_states=False, output_attentions=False, cls_only=False):
        """`cls_only`: the last layer computes position 0 alone (its K and V still see every token), for callers
        that read only the [CLS] vector; the output is then (B, 1, H)."""
        all_hidden = [x] if output_hidden_states else None
        all_attn = [] if output_attentions else None
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            cls_here = cls_only and i == last
            if self.gradient_checkpointing and self.training:
                x, probs = torch.utils.checkpoint.checkpoint(layer, x, mask, output_attentions, cls_here,
                                                             use_reentrant=False)
            else:
                x, probs = layer(x, mask, output_attentions, cls_here)
            if output_hidden_states:
                all_hidden.append(x)
            if output_attentions:
                all_attn.append(probs)
        return x, all_hidden, all_attn


class BertPooler(nn.Module):
    """tanh(dense(h[CLS])): the sentence vector the NSP and classification heads read."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, L, H) -> (B, H)
        return self.activation(self.dense(hidden[:, 0]))


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, L) 1/0 mask -> (B, 1, 1, L) bool for SDPA, or None when nothing is padded (lets SDPA take its fast path)."""
    if attention_mask is None:
        return None
    if not torch.compiler.is_compiling() and attention_mask.bool().all():  # data-dependent: compiled graphs keep it
        return None
    return attention_mask_4d(attention_mask)


class BertModel(BertPreTrainedModel):
    """Embeddings + encoder (+ pooler). The base of every head."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        # Remove padding after the embeddings so dense layers, LayerNorm and GELU skip it (off: transformers' path).
        self.unpadded = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,  # (B, L)
        attention_mask: torch.Tensor | None = None,  # (B, L), 1 = token, 0 = padding
        token_type_ids: torch.Tensor | None = None,  # (B, L)
        position_ids: torch.Tensor | None = None,  # (B, L)
        inputs_embeds: torch.Tensor | None = None,  # (B, L, H)
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        cls_only: bool = False,
    ) -> BaseModelOutput:
        """`cls_only`: compute only what the pooler reads. The last layer runs for the [CLS] position alone and
        `last_hidden_state` is (B, 1, H); ignored when hidden states or attentions are asked for. The heads that
        read only the pooled vector (sequence classification, NSP, multiple choice) set it."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, L, H)
        mask = padding_mask(attention_mask)
        cls_only = cls_only and not (output_hidden_states or output_attentions)
        if self.unpadded and mask is not None and not (output_attentions or cls_only):
            tokens, packing = unpad(x, attention_mask)  # (T, H)
            tokens, hidden, attn = self.encoder(tokens, packing, output_hidden_states)
            x = pad(tokens, packing)  # (B, L, H), zeros at padded positions
            hidden = [pad(h, packing) for h in hidden] if hidden is not None else None
        else:
            x, hidden, attn = self.encoder(x, mask, output_hidden_states, output_attentions, cls_only)
        return BaseModelOutput(
            last_hidden_state=x,
            pooler_output=self.pooler(x) if self.pooler is not None else None,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(attn) if attn is not None else None,
        )
