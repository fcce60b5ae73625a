# Written by llmprune beside the weights of a ragged (per-layer-size) pruned model, and of every
# ChatGLM model, so that transformers can load it:
# AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True).
#
# LLaMA / Mistral / Qwen2: the models are transformers' own classes; only the construction of the
# decoder layers differs. Layer i is transformers' own decoder layer, built from a view of the
# config whose num_attention_heads / num_key_value_heads / intermediate_size are the ones
# config.json's `llmprune_layers[i]` lists (everything else is read live from the model config).
# A layer whose entry has 0 attention heads (or "skip": ["attention"]) has no attention weights:
# its attention and input norm are replaced by no-ops, so the residual passes through; the same
# for intermediate_size 0 (or "skip": ["mlp"]) and the MLP with its norm.
#
# Targets transformers >= 4.45 (Qwen2: >= 4.48). It relies on: decoder layers read their sizes
# from the config they are built with (LlamaAttention reads config.head_dim since 4.45,
# Qwen2Attention since the 4.48 attention refactor), XModel.__init__ builds
# config.num_hidden_layers layers, attention returns (output, weights, cache) before that
# refactor and (output, weights) after it. Which sources were read and what was run: llmprune's
# docs/export.md.
#
# ChatGLM (THUDM's ChatGLM2/3 and GLM-4 "chatglm" format): transformers has no such model, so the
# block is written out below with THUDM's module names (transformer.encoder.layers.N.
# self_attention.query_key_value / dense, mlp.dense_h_to_4h / dense_4h_to_h: the names PEFT targets
# and the checkpoint's tensor names), each layer sized by its `llmprune_layers` entry
# (num_attention_heads, multi_query_group_num, ffn_hidden_size; 0 = sub-block removed, with its
# norm). From transformers it uses PreTrainedModel, GenerationMixin, DynamicCache, LlamaRMSNorm
# (ChatGLM's RMSNorm: variance in float32) and the model output classes.
import contextlib

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2

from .configuration_llmprune import (
    LlmpruneChatGLMConfig,
    LlmpruneLlamaConfig,
    LlmpruneMistralConfig,
    LlmpruneQwen2Config,
)

_LAYER_SIZE_KEYS = ("num_attention_heads", "num_key_value_heads", "intermediate_size", "head_dim")
_CHATGLM_LAYER_SIZE_KEYS = ("num_attention_heads", "multi_query_group_num", "ffn_hidden_size")


class _LayerConfig:
    """One layer's view of the model config: its own sizes, every other attribute read from the
    model config when asked (so a later change of e.g. the attention implementation applies)."""

    def __init__(self, config, sizes):
        self._config = config
        self.__dict__.update(sizes)

    def __getattr__(self, name):
        if name.startswith("__") or name == "_config":
            raise AttributeError(name)
        return getattr(self._config, name)


def _layer_sizes(config, layer_idx, keys=_LAYER_SIZE_KEYS):
    layers = getattr(config, "llmprune_layers", None)
    if not layers:
        return {}, []
    if len(layers) != config.num_hidden_layers:
        raise ValueError(
            f"config.json: llmprune_layers has {len(layers)} entries for num_hidden_layers={config.num_hidden_layers}"
        )
    entry = layers[layer_idx]
    return {k: int(entry[k]) for k in keys if k in entry}, list(entry.get("skip", []))


class _Passthrough(nn.Module):
    """Stands for the norm in front of a removed sub-block."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class _RemovedMLP(nn.Module):
    def forward(self, hidden_states, *args, **kwargs):
        return torch.zeros_like(hidden_states)


class _RemovedAttention(nn.Module):
    """Adds nothing to the residual. With a KV cache it stores zero heads for its layer, so the
    cache still counts the tokens seen when layer 0's attention is the removed one."""

    def __init__(self, head_dim, layer_idx, returns_cache):
        super().__init__()
        self.head_dim = head_dim
        self.layer_idx = layer_idx
        self.returns_cache = returns_cache  # before the 4.48 refactor: (output, weights, cache)

    def forward(self, hidden_states, *args, **kwargs):
        cache = kwargs.get("past_key_values", kwargs.get("past_key_value"))
        if cache is not None and hasattr(cache, "update"):
            batch, seq = hidden_states.shape[:2]
            empty = hidden_states.new_zeros(batch, 0, seq, self.head_dim)  # [B, 0 heads, T, head_dim]
            cache.update(empty, empty, self.layer_idx, {"cache_position": kwargs.get("cache_position")})
        out = torch.zeros_like(hidden_states)
        return (out, None, cache) if self.returns_cache else (out, None)


def _build_layer(layer_cls, config, layer_idx, old_attention_api):
    sizes, skip = _layer_sizes(config, layer_idx)
    no_attention = "attention" in skip or sizes.get("num_attention_heads", config.num_attention_heads) == 0
    no_mlp = "mlp" in skip or sizes.get("intermediate_size", config.intermediate_size) == 0
    # A removed sub-block is built at the smallest size, then replaced (it has no weights).
    if no_attention:
        sizes.update(num_attention_heads=1, num_key_value_heads=1)
    if no_mlp:
        sizes["intermediate_size"] = 1
    layer = layer_cls(_LayerConfig(config, sizes), layer_idx)
    if no_attention:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        layer.input_layernorm = _Passthrough()
        layer.self_attn = _RemovedAttention(head_dim, layer_idx, old_attention_api)
    if no_mlp:
        layer.post_attention_layernorm = _Passthrough()
        layer.mlp = _RemovedMLP()
    return layer


@contextlib.contextmanager
def _without_layers(config):
    """The parent constructor then builds no uniform layers (they would have the wrong sizes)."""
    n_layers = config.num_hidden_layers
    config.num_hidden_layers = 0
    try:
        yield
    finally:
        config.num_hidden_layers = n_layers


def _init_model(model, parent_init, config, layer_cls, old_attention_api):
    with _without_layers(config):
        parent_init(config)
    model.layers = nn.ModuleList(
        [_build_layer(layer_cls, config, i, old_attention_api) for i in range(config.num_hidden_layers)]
    )
    model.post_init()


def _init_causal_lm(model, parent_init, config, model_cls):
    with _without_layers(config):
        parent_init(config)
    model.model = model_cls(config)
    model.post_init()


# Before transformers 4.48 each family had one attention class per implementation (eager, sdpa,
# flash) returning (output, weights, cache), and Qwen2Attention derived head_dim from hidden_size.
_LLAMA_OLD_API = hasattr(modeling_llama, "LlamaSdpaAttention")
_MISTRAL_OLD_API = hasattr(modeling_mistral, "MistralSdpaAttention")
_QWEN2_OLD_API = hasattr(modeling_qwen2, "Qwen2SdpaAttention")


class LlmpruneLlamaModel(modeling_llama.LlamaModel):
    config_class = LlmpruneLlamaConfig

    def __init__(self, config):
        _init_model(self, super().__init__, config, modeling_llama.LlamaDecoderLayer, _LLAMA_OLD_API)


class LlmpruneLlamaForCausalLM(modeling_llama.LlamaForCausalLM):
    config_class = LlmpruneLlamaConfig

    def __init__(self, config):
        _init_causal_lm(self, super().__init__, config, LlmpruneLlamaModel)


class LlmpruneMistralModel(modeling_mistral.MistralModel):
    config_class = LlmpruneMistralConfig

    def __init__(self, config):
        _init_model(self, super().__init__, config, modeling_mistral.MistralDecoderLayer, _MISTRAL_OLD_API)


class LlmpruneMistralForCausalLM(modeling_mistral.MistralForCausalLM):
    config_class = LlmpruneMistralConfig

    def __init__(self, config):
        _init_causal_lm(self, super().__init__, config, LlmpruneMistralModel)


class LlmpruneQwen2Model(modeling_qwen2.Qwen2Model):
    config_class = LlmpruneQwen2Config

    def __init__(self, config):
        if _QWEN2_OLD_API:
            raise ImportError("a ragged Qwen2 model needs transformers >= 4.48 (older Qwen2Attention ignores config.head_dim)")
        _init_model(self, super().__init__, config, modeling_qwen2.Qwen2DecoderLayer, False)


class LlmpruneQwen2ForCausalLM(modeling_qwen2.Qwen2ForCausalLM):
    config_class = LlmpruneQwen2Config

    def __init__(self, config):
        _init_causal_lm(self, super().__init__, config, LlmpruneQwen2Model)



# ---- ChatGLM ----


def _record_empty_heads(cache, hidden_states, head_dim, layer_idx):
    """A removed attention stores zero heads, so the cache counts the tokens seen (see above)."""
    batch, seq = hidden_states.shape[:2]
    empty = hidden_states.new_zeros(batch, 0, seq, head_dim)  # [B, 0 heads, T, head_dim]
    cache.update(empty, empty, layer_idx)


def _chatglm_rotary(x, cos, sin):
    """THUDM's apply_rotary_pos_emb: consecutive pairs (2i, 2i+1) of the first 2 * cos.shape[-1]
    dims of each head; x [B, heads, T, head_dim], cos/sin [B, T, rotated/2]."""
    rotated = 2 * cos.shape[-1]
    x_rot, x_pass = x[..., :rotated], x[..., rotated:]
    even, odd = x_rot[..., 0::2], x_rot[..., 1::2]
    cos, sin = cos[:, None], sin[:, None]
    out = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)
    return torch.cat((out.to(x.dtype), x_pass), dim=-1)


class ChatGLMSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_groups = config.multi_query_group_num
        self.head_dim = config.kv_channels
        # [all query heads | K groups | V groups] rows, THUDM's multi_query_attention layout
        self.qkv_sizes = [self.num_heads * self.head_dim] + 2 * [self.num_groups * self.head_dim]
        self.query_key_value = nn.Linear(config.hidden_size, sum(self.qkv_sizes),
                                         bias=config.add_bias_linear or config.add_qkv_bias)
        self.dense = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.add_bias_linear)

    def forward(self, hidden_states, cos, sin, mask, cache):
        batch, seq = hidden_states.shape[:2]
        q, k, v = self.query_key_value(hidden_states).split(self.qkv_sizes, dim=-1)
        q = q.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)  # [B, heads, T, head_dim]
        k = k.view(batch, seq, self.num_groups, self.head_dim).transpose(1, 2)  # [B, groups, T, head_dim]
        v = v.view(batch, seq, self.num_groups, self.head_dim).transpose(1, 2)
        q, k = _chatglm_rotary(q, cos, sin), _chatglm_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        k = k.repeat_interleave(self.num_heads // self.num_groups, dim=1)  # head h reads group h // (heads/groups)
        v = v.repeat_interleave(self.num_heads // self.num_groups, dim=1)
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(self.head_dim) + mask
        context = scores.softmax(dim=-1).to(v.dtype) @ v
        return self.dense(context.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim))


class ChatGLMMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        # [gate | up] rows: the gate is the FIRST half
        self.dense_h_to_4h = nn.Linear(config.hidden_size, 2 * config.ffn_hidden_size, bias=config.add_bias_linear)
        self.dense_4h_to_h = nn.Linear(config.ffn_hidden_size, config.hidden_size, bias=config.add_bias_linear)

    def forward(self, hidden_states):
        gate, up = self.dense_h_to_4h(hidden_states).chunk(2, dim=-1)
        return self.dense_4h_to_h(F.silu(gate) * up)


class ChatGLMBlock(nn.Module):
    """THUDM's GLMBlock (pre-norm, residual on the un-normalised stream) at this layer's sizes; a
    removed sub-block has no module and no norm."""

    def __init__(self, config, layer_idx):
        super().__init__()
        sizes, skip = _layer_sizes(config, layer_idx, _CHATGLM_LAYER_SIZE_KEYS)
        layer_config = _LayerConfig(config, sizes)
        self.layer_idx = layer_idx
        self.head_dim = config.kv_channels
        self.has_attention = "attention" not in skip and layer_config.num_attention_heads > 0
        self.has_mlp = "mlp" not in skip and layer_config.ffn_hidden_size > 0
        if self.has_attention:
            self.input_layernorm = modeling_llama.LlamaRMSNorm(config.hidden_size, eps=config.layernorm_epsilon)
            self.self_attention = ChatGLMSelfAttention(layer_config, layer_idx)
        if self.has_mlp:
            self.post_attention_layernorm = modeling_llama.LlamaRMSNorm(config.hidden_size, eps=config.layernorm_epsilon)
            self.mlp = ChatGLMMLP(layer_config)

    def forward(self, hidden_states, cos, sin, mask, cache):
        if self.has_attention:
            hidden_states = hidden_states + self.self_attention(self.input_layernorm(hidden_states), cos, sin, mask, cache)
        elif cache is not None:
            _record_empty_heads(cache, hidden_states, self.head_dim, self.layer_idx)
        if self.has_mlp:
            hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states


class ChatGLMEmbedding(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, config.hidden_size)

    def forward(self, input_ids):
        return self.word_embeddings(input_ids)


class ChatGLMEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList([ChatGLMBlock(config, i) for i in range(config.num_layers)])
        self.final_layernorm = modeling_llama.LlamaRMSNorm(config.hidden_size, eps=config.layernorm_epsilon)


class LlmpruneChatGLMPreTrainedModel(PreTrainedModel):
    config_class = LlmpruneChatGLMConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["ChatGLMBlock"]
    _supports_cache_class = True
    _keys_to_ignore_on_load_unexpected = [r"rotary_pos_emb\.inv_freq"]  # THUDM's checkpoints store it

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()


class LlmpruneChatGLMModel(LlmpruneChatGLMPreTrainedModel):
    """THUDM's ChatGLMModel: embedding, encoder (layers, final_layernorm) and output_layer, which
    the causal LM applies (so the tensor is transformer.output_layer.weight)."""

    def __init__(self, config):
        super().__init__(config)
        unsupported = [k for k, ok in (("rmsnorm", config.rmsnorm), ("post_layer_norm", config.post_layer_norm),
                                       ("multi_query_attention", config.multi_query_attention),
                                       ("apply_residual_connection_post_layernorm",
                                        not config.apply_residual_connection_post_layernorm)) if not ok]
        if unsupported:
            raise ValueError(f"config.json: this ChatGLM code does not support {', '.join(unsupported)} as set")
        self.embedding = ChatGLMEmbedding(config)
        self.encoder = ChatGLMEncoder(config)
        self.output_layer = nn.Linear(config.hidden_size, config.padded_vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.embedding.word_embeddings

    def set_input_embeddings(self, value):
        self.embedding.word_embeddings = value

    def _rotary_tables(self, position_ids):
        """cos/sin [B, T, kv_channels/4]: base 10000 * rope_ratio over the first kv_channels/2 dims."""
        rotated = self.config.kv_channels // 2
        base = 10000.0 * self.config.rope_ratio
        inv_freq = 1.0 / base ** (torch.arange(0, rotated, 2, dtype=torch.float32, device=position_ids.device) / rotated)
        angles = position_ids.float()[..., None] * inv_freq
        return angles.cos(), angles.sin()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, inputs_embeds=None,
                use_cache=None, output_hidden_states=None, return_dict=None, **kwargs):
        use_cache = use_cache if use_cache is not None else getattr(self.config, "use_cache", True)
        hidden_states = self.embedding(input_ids) if inputs_embeds is None else inputs_embeds
        batch, seq = hidden_states.shape[:2]
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        elif use_cache and not isinstance(past_key_values, Cache):  # legacy tuples (before transformers 4.47)
            past_key_values = DynamicCache.from_legacy_cache(past_key_values)
        cache = past_key_values if use_cache else None
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + seq, device=hidden_states.device).expand(batch, seq)
        cos, sin = self._rotary_tables(position_ids)
        # Causal over [past tokens | these], plus padding from attention_mask [B, past + T]; a
        # fully masked row (a left pad) stays finite.
        keys = torch.arange(past + seq, device=hidden_states.device)
        blocked = keys[None, :] > (past + torch.arange(seq, device=hidden_states.device))[:, None]  # [T, past + T]
        blocked = blocked[None, None]
        if attention_mask is not None:
            blocked = blocked | (attention_mask[:, None, None, :] == 0)
        mask = torch.zeros(blocked.shape, dtype=torch.float32, device=hidden_states.device)
        mask = mask.masked_fill(blocked, torch.finfo(torch.float32).min)
        all_hidden = () if output_hidden_states else None
        for layer in self.encoder.layers:
            if output_hidden_states:
                all_hidden += (hidden_states,)
            hidden_states = layer(hidden_states, cos, sin, mask, cache)
        hidden_states = self.encoder.final_layernorm(hidden_states)
        if output_hidden_states:
            all_hidden += (hidden_states,)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, past_key_values=cache, hidden_states=all_hidden)


class LlmpruneChatGLMForCausalLM(LlmpruneChatGLMPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.transformer = LlmpruneChatGLMModel(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.transformer.embedding.word_embeddings

    def set_input_embeddings(self, value):
        self.transformer.embedding.word_embeddings = value

    def get_output_embeddings(self):
        return self.transformer.output_layer

    def set_output_embeddings(self, value):
        self.transformer.output_layer = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, inputs_embeds=None,
                labels=None, use_cache=None, output_hidden_states=None, return_dict=None, **kwargs):
        out = self.transformer(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                               output_hidden_states=output_hidden_states)
        logits = self.transformer.output_layer(out.last_hidden_state).float()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                      hidden_states=out.hidden_states)

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None, use_cache=None,
                                      **kwargs):
        if isinstance(past_key_values, Cache) and past_key_values.get_seq_length() > 0:
            input_ids = input_ids[:, past_key_values.get_seq_length():]
        return {"input_ids": input_ids, "past_key_values": past_key_values, "attention_mask": attention_mask,
                "use_cache": use_cache}
