"""A plain PyTorch GPT training step, the yardstick for our CPU speed (benchmarks only).

Same architecture and sizes as minirlhf.model (pre-LN GPT-2 block, tied unembedding, AdamW,
fp32).  Install with `pip install torch` (not a dependency of minirlhf).

    python benchmarks/torch_reference.py            # prints ms per training step
"""

import math
import time

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x, mask):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.h, D // self.h).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D // self.h)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(B, T, D))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, T, L, D, H):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, D), nn.Embedding(T, D)
        self.blocks = nn.ModuleList(Block(D, H) for _ in range(L))
        self.ln_f = nn.LayerNorm(D)
        self.register_buffer("mask", torch.tril(torch.ones(T, T, dtype=torch.bool)))

    def forward(self, idx):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.blocks:
            x = b(x, self.mask[:T, :T])
        return self.ln_f(x) @ self.wte.weight.T


def time_step(V=512, T=64, L=4, D=128, H=4, B=32, iters=20, warmup=3, threads=None):
    """Median ms of one AdamW training step (forward, backward, update) on random tokens."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPT(V, T, L, D, H)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    x = torch.randint(3, V, (B, T))
    times = []
    for i in range(warmup + iters):
        t = time.perf_counter()
        logits = model(x)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    times.sort()
    return 1000 * times[len(times) // 2]


if __name__ == "__main__":
    print(f"pytorch {torch.__version__} step: {time_step():.1f} ms (median)")
