"""Tabular autoregressive policies on the exact world: the purest view of the math.

A policy is a table of next-token logits, one row per prefix node of the response tree
(see `minirlhf.worlds.exact.prefix_nodes`):

    params = {"logits": [P, n_prefixes, A]},   n_prefixes = 1 + A + ... + A^(K-1)
    pi(y | p) = prod_k softmax(logits[p, node(y_<k)])[y_k]

Every distribution over the A^K responses with full support is representable (the
conditionals of any joint distribution are a row each), so there is no function
approximation in the way: what PPO or DPO converges to is what the objective says.
An optional critic lives in the same pytree: params["values"] [P, n_prefixes] holds
V(p, u) for every prefix node u (the state before the next token).
"""

from functools import partial

import jax
import jax.numpy as jnp

from minirlhf.exact.world import (
    all_responses,
    level_offsets,
    n_prefixes,
    prefix_nodes,
    sequence_logprobs_from_token_logprobs,
)

MIN_LOGIT = -30.0  # logit used for next tokens of zero probability (keeps gradients finite)
# The public functions are jax.jit-ed: eager, each small op would compile separately; under
# an outer jit (the training runs) they are simply inlined.


def init_tabular(key: jax.Array, n_prompts: int, alphabet_size: int, length: int,
                 scale: float = 0.0) -> dict:
    """Random table: logits ~ scale * N(0, 1) (scale = 0 gives the uniform policy).

    Returns {"logits": [P, n_prefixes, A]}.
    """
    shape = (n_prompts, n_prefixes(alphabet_size, length), alphabet_size)
    return {"logits": scale * jax.random.normal(key, shape)}


def init_tabular_from_logprobs(logp: jax.Array, alphabet_size: int, length: int) -> dict:
    """The table whose sequence distribution is exactly `logp` (e.g. to start at pi_ref).

    The conditional of token a after prefix u is pi(u a) / pi(u), where pi(u) sums the
    mass of all responses starting with u. In lexicographic order the responses with prefix
    u are a contiguous block, so pi(u) for all u of depth k is a reshape + logsumexp.
    Prefixes of zero mass get uniform rows; zero-probability tokens get MIN_LOGIT.
    logp: [P, N] with N = A^K. Returns {"logits": [P, n_prefixes, A]}.
    """
    N = logp.shape[-1]
    if N != alphabet_size**length:
        raise ValueError(f"tabular.py init_tabular_from_logprobs: logp has N={N} responses, "
                         f"expected A^K = {alphabet_size}^{length} = {alphabet_size**length}")
    return _conditionals(logp, alphabet_size, length)


@partial(jax.jit, static_argnums=(1, 2))
def _conditionals(logp: jax.Array, alphabet_size: int, length: int) -> dict:
    P = logp.shape[0]
    rows = []
    for k in range(length):  # depth of the parent prefix
        blocks = logp.reshape(P, alphabet_size ** (k + 1), -1)  # [P, A^(k+1), A^(K-k-1)]
        child_mass = jax.nn.logsumexp(blocks, axis=-1)  # [P, A^(k+1)] log pi(u a)
        child_mass = child_mass.reshape(P, alphabet_size**k, alphabet_size)  # [P, A^k, A]
        parent_mass = jax.nn.logsumexp(child_mass, axis=-1, keepdims=True)  # log pi(u)
        cond = jnp.where(jnp.isfinite(parent_mass), child_mass - parent_mass, 0.0)
        rows.append(jnp.maximum(cond, MIN_LOGIT))
    return {"logits": jnp.concatenate(rows, axis=1)}  # [P, n_prefixes, A]


@jax.jit
def token_logprobs(params: dict, prompt_ids: jax.Array, responses: jax.Array) -> jax.Array:
    """log pi(y_k | p, y_<k) for a batch. prompt_ids [B], responses [B, K] -> [B, K]."""
    alphabet_size = params["logits"].shape[-1]
    nodes = prefix_nodes(responses, alphabet_size)  # [B, K]
    logits = params["logits"][prompt_ids[:, None], nodes]  # [B, K, A]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, responses[..., None], axis=-1)[..., 0]


@jax.jit
def token_values(params: dict, prompt_ids: jax.Array, responses: jax.Array) -> jax.Array:
    """Critic V(p, y_<k), the value of the state before token k, from params["values"].

    params: {"logits": [P, n_prefixes, A], "values": [P, n_prefixes]};
    prompt_ids [B], responses [B, K]. Returns [B, K].
    """
    nodes = prefix_nodes(responses, params["logits"].shape[-1])  # [B, K]
    return params["values"][prompt_ids[:, None], nodes]


@jax.jit
def all_sequence_logprobs(params: dict) -> jax.Array:
    """The exact distribution log pi(y | p) over all A^K responses. Returns [P, N]."""
    _, n_nodes, A = params["logits"].shape
    length = _length_of(n_nodes, A)
    table = jax.nn.log_softmax(params["logits"], axis=-1)
    return sequence_logprobs_from_token_logprobs(table, all_responses(A, length))


def _length_of(n_nodes: int, alphabet_size: int) -> int:
    for k in range(1, 64):
        if level_offsets(alphabet_size, k)[-1] == n_nodes:
            return k
    raise ValueError(f"tabular.py: {n_nodes} prefixes is not 1 + A + ... + A^(K-1) "
                     f"for A={alphabet_size}")


@jax.jit
def sample(params: dict, prompt_ids: jax.Array, key: jax.Array):
    """Ancestral sampling y_k ~ softmax(logits[p, node(y_<k)]), one key per position.

    prompt_ids [B] int. Returns (responses [B, K] int32, logps [B, K] per-token log-probs).
    """
    _, n_nodes, A = params["logits"].shape
    length = _length_of(n_nodes, A)
    offsets = level_offsets(A, length)
    B = prompt_ids.shape[0]

    def step(value, xs):
        k_key, offset = xs
        logits = params["logits"][prompt_ids, offset + value]  # [B, A]
        token = jax.random.categorical(k_key, logits).astype(jnp.int32)  # [B]
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], -1)[:, 0]
        return value * A + token, (token, logp)

    xs = (jax.random.split(key, length), jnp.asarray(offsets[:length], jnp.int32))
    _, (tokens, logps) = jax.lax.scan(step, jnp.zeros(B, jnp.int32), xs)
    return tokens.T, logps.T  # [B, K] each
