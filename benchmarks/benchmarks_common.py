"""Configs shared by the benchmark scripts."""
from minirlhf.model import GPTConfig


def gpt2_small(attention: str) -> GPTConfig:
    """GPT-2 small (124M): 12 layers, d=768, 12 heads, T=1024, vocab padded to 50304, bf16 compute."""
    return GPTConfig(vocab_size=50304, max_len=1024, n_layer=12, n_head=12, d_model=768,
                     attention=attention, compute_dtype="bfloat16")
