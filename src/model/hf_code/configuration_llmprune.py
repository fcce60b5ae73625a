# Written by llmprune beside the weights of a ragged (per-layer-size) pruned model, so that
# transformers can load it: AutoConfig / AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True).
#
# Each class is transformers' own config class, unchanged: config.json's `llmprune_layers` (one
# entry per layer: num_attention_heads, num_key_value_heads, intermediate_size; 0 heads = the
# layer's attention is removed, intermediate_size 0 = its MLP is removed) is kept by
# PretrainedConfig as an extra attribute and read by modeling_llmprune.py. The subclasses exist
# so that config.json's auto_map names a config class that belongs to modeling_llmprune's models.
# Targets transformers >= 4.45 (Qwen2: >= 4.48); what was checked and run: llmprune's docs/export.md.
from transformers.models.llama.configuration_llama import LlamaConfig
from transformers.models.mistral.configuration_mistral import MistralConfig
from transformers.models.qwen2.configuration_qwen2 import Qwen2Config


class LlmpruneLlamaConfig(LlamaConfig):
    pass


class LlmpruneMistralConfig(MistralConfig):
    pass


class LlmpruneQwen2Config(Qwen2Config):
    pass
