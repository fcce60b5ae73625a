# Written by llmprune beside the weights of a ragged (per-layer-size) pruned model, so that
# transformers can load it: AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True).
#
# The models are transformers' own LLaMA / Mistral / Qwen2 classes; only the construction of the
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
import contextlib

import torch
from torch import nn
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2

from .configuration_llmprune import LlmpruneLlamaConfig, LlmpruneMistralConfig, LlmpruneQwen2Config

_LAYER_SIZE_KEYS = ("num_attention_heads", "num_key_value_heads", "intermediate_size", "head_dim")


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


def _layer_sizes(config, layer_idx):
    layers = getattr(config, "llmprune_layers", None)
    if not layers:
        return {}, []
    if len(layers) != config.num_hidden_layers:
        raise ValueError(
            f"config.json: llmprune_layers has {len(layers)} entries for num_hidden_layers={config.num_hidden_layers}"
        )
    entry = layers[layer_idx]
    return {k: int(entry[k]) for k in _LAYER_SIZE_KEYS if k in entry}, list(entry.get("skip", []))


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
