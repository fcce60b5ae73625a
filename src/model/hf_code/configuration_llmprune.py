# Written by llmprune beside the weights of a ragged (per-layer-size) pruned model, and of every
# ChatGLM model (transformers has no chatglm class), so that transformers can load it:
# AutoConfig / AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True).
#
# The LLaMA / Mistral / Qwen2 classes are transformers' own config classes, unchanged:
# config.json's `llmprune_layers` (one entry per layer: num_attention_heads, num_key_value_heads,
# intermediate_size; ChatGLM: num_attention_heads, multi_query_group_num, ffn_hidden_size; 0 heads
# = the layer's attention is removed, 0 width = its MLP is removed) is kept by PretrainedConfig as
# an extra attribute and read by modeling_llmprune.py. The subclasses exist so that config.json's
# auto_map names a config class that belongs to modeling_llmprune's models.
# Targets transformers >= 4.45 (Qwen2: >= 4.48); what was checked and run: llmprune's docs/export.md.
from transformers import PretrainedConfig
from transformers.models.llama.configuration_llama import LlamaConfig
from transformers.models.mistral.configuration_mistral import MistralConfig
from transformers.models.qwen2.configuration_qwen2 import Qwen2Config


class LlmpruneLlamaConfig(LlamaConfig):
    pass


class LlmpruneMistralConfig(MistralConfig):
    pass


class LlmpruneQwen2Config(Qwen2Config):
    pass


class LlmpruneChatGLMConfig(PretrainedConfig):
    """THUDM's ChatGLM2/3 and GLM-4 `chatglm` config keys (their configuration_chatglm.py), for
    the checkpoints llmprune reads and writes: RMSNorm, multi-query groups, no P-tuning prefix."""

    model_type = "chatglm"
    attribute_map = {"num_hidden_layers": "num_layers", "vocab_size": "padded_vocab_size"}

    def __init__(self, num_layers=28, padded_vocab_size=65024, hidden_size=4096, ffn_hidden_size=13696,
                 kv_channels=128, num_attention_heads=32, seq_length=2048, layernorm_epsilon=1e-5, rmsnorm=True,
                 apply_residual_connection_post_layernorm=False, post_layer_norm=True, add_bias_linear=False,
                 add_qkv_bias=False, multi_query_attention=False, multi_query_group_num=1, rope_ratio=1,
                 tie_word_embeddings=False, **kwargs):
        self.num_layers = num_layers
        self.padded_vocab_size = padded_vocab_size
        self.hidden_size = hidden_size
        self.ffn_hidden_size = ffn_hidden_size
        self.kv_channels = kv_channels
        self.num_attention_heads = num_attention_heads
        self.seq_length = seq_length
        self.layernorm_epsilon = layernorm_epsilon
        self.rmsnorm = rmsnorm
        self.apply_residual_connection_post_layernorm = apply_residual_connection_post_layernorm
        self.post_layer_norm = post_layer_norm
        self.add_bias_linear = add_bias_linear
        self.add_qkv_bias = add_qkv_bias
        self.multi_query_attention = multi_query_attention
        self.multi_query_group_num = multi_query_group_num
        self.rope_ratio = rope_ratio
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
