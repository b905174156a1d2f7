"""`training.FEW_STEPS` changes how a step is compiled, not what it computes."""

import jax
import numpy as np

from minirlhf import model
from minirlhf.pretrain import lm_loss
from minirlhf.training import FEW_STEPS, init_train_state, make_optimizer, make_train_step

CFG = model.GPTConfig(vocab_size=32, max_len=8, n_layer=1, n_head=2, d_model=16)


def test_few_steps_options_give_the_same_step():
    params = model.init_params(jax.random.PRNGKey(0), CFG)
    rng = np.random.default_rng(0)
    batch = {"tokens": rng.integers(3, CFG.vocab_size, (4, 8)).astype(np.int32),
             "attention_mask": np.ones((4, 8), np.int32), "loss_mask": np.ones((4, 8), np.int32)}
    optimizer = make_optimizer(1e-2, total_steps=3, warmup_steps=1)
    loss = lambda p, b: lm_loss(p, b, CFG)
    states = []
    for options in (None, FEW_STEPS):
        step, state = make_train_step(loss, optimizer, compiler_options=options), init_train_state(params, optimizer)
        for _ in range(3):
            state, _ = step(state, batch)
        states.append(state)
    moved = max(float(np.abs(a - b).max()) for a, b in
                zip(jax.tree_util.tree_leaves(states[0].params), jax.tree_util.tree_leaves(params)))
    assert moved > 1e-3                                     # the steps did change the weights
    for a, b in zip(jax.tree_util.tree_leaves(states[0].params), jax.tree_util.tree_leaves(states[1].params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
