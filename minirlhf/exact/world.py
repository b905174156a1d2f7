"""The exact world: a response space small enough to enumerate.

Every prompt p in {0..P-1} has the same response space: all strings y = (y_0 .. y_{K-1})
over an alphabet of A symbols, N = A^K of them (A=4, K=4 -> 256), listed in lexicographic
order so that response index = the base-A number y_0 y_1 ... y_{K-1}.

Because N is small, a policy is just a table `logp [P, N]` of log-probabilities, and every
quantity the alignment papers write as an expectation -- expected reward, KL to the
reference, the KL-regularised optimum pi*_beta, the best-of-n distribution -- is a finite
sum we can compute exactly. The tabular policies (`minirlhf.tabular`) and the PPO / DPO
runs on them are checked against these numbers.

Gold reward (what there is to learn). Each prompt p has a seeded target string t_p and

    r(p, y) = (1/K) sum_k 1[y_k == t_{p,k}]  +  noise_scale * eps(p, y),   eps ~ N(0, 1)

i.e. the fraction of positions that match the target plus a little seeded noise (which also
makes the rewards distinct, so best-of-n has no ties in practice).

Reference policy. An autoregressive table over the prefix tree (see `prefix_nodes`):
at every prefix node the next-token logits are `ref_logit_scale * N(0, 1)` minus
`ref_target_penalty` on the target's next symbol, so pi_ref rarely writes the target and
puts most of its mass on mediocre responses: alignment has somewhere to go.
"""

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf.config import check_fields


@dataclass(frozen=True)
class ExactWorldConfig:
    n_prompts: int = 4
    """P: number of prompts (each one is an independent bandit over the N responses)."""
    alphabet_size: int = 4
    """A: symbols per position (>= 2)."""
    length: int = 4
    """K: response length; the response space has N = A^K elements."""
    seed: int = 0
    """Seed for the targets, the reward noise and the reference table."""
    noise_scale: float = 0.05
    """Std of the Gaussian noise added to the match-fraction reward."""
    ref_logit_scale: float = 0.5
    """Std of the reference policy's random next-token logits."""
    ref_target_penalty: float = 1.0
    """Subtracted from the reference logit of the target's next symbol (mediocre pi_ref)."""

    def __post_init__(self):
        check_fields(self, counts=("n_prompts", "alphabet_size", "length"), naturals=("seed",),
                     non_negative=("noise_scale", "ref_logit_scale"),
                     finite=("ref_target_penalty",))
        if self.alphabet_size < 2:
            raise ValueError(f"ExactWorldConfig.alphabet_size: expected an integer >= 2, "
                             f"got {self.alphabet_size}")


class ExactWorld(NamedTuple):
    responses: jax.Array  # [N, K] int32, all A^K strings in lexicographic order
    targets: jax.Array  # [P, K] int32, the per-prompt target string t_p
    reward: jax.Array  # [P, N] gold reward r(p, y)
    ref_logits: jax.Array  # [P, n_prefixes, A] reference next-token logits per prefix node
    logp_ref: jax.Array  # [P, N] exact log pi_ref(y | p)


# ----------------------------------------------------------------------------- the prefix tree


def _check_alphabet(alphabet_size: int, length: int) -> None:
    if alphabet_size < 2 or length < 1:
        raise ValueError(
            f"exact/world.py: need alphabet_size >= 2 and length >= 1, "
            f"got alphabet_size={alphabet_size}, length={length}"
        )


def level_offsets(alphabet_size: int, length: int) -> np.ndarray:
    """Node index of the first prefix of each depth: offsets[k] = (A^k - 1) / (A - 1).

    Prefix nodes are numbered breadth-first: the empty prefix is node 0, the A prefixes of
    length 1 are nodes 1..A, and so on. The prefix with base-A value v and depth k is node
    offsets[k] + v. offsets[K] = 1 + A + ... + A^(K-1) = n_prefixes. Returns int [K + 1].
    """
    _check_alphabet(alphabet_size, length)
    return np.array([(alphabet_size**k - 1) // (alphabet_size - 1) for k in range(length + 1)])


def n_prefixes(alphabet_size: int, length: int) -> int:
    """Number of non-leaf nodes of the prefix tree: 1 + A + ... + A^(K-1)."""
    return int(level_offsets(alphabet_size, length)[-1])


def all_responses(alphabet_size: int, length: int) -> jax.Array:
    """All A^K strings in lexicographic order. Returns int32 [N, K], row n = base-A digits of n."""
    _check_alphabet(alphabet_size, length)
    n = np.arange(alphabet_size**length)
    powers = alphabet_size ** np.arange(length - 1, -1, -1)  # [K]
    return jnp.asarray((n[:, None] // powers[None, :]) % alphabet_size, dtype=jnp.int32)


def response_index(responses: jax.Array, alphabet_size: int) -> jax.Array:
    """Index of each response in `all_responses`: sum_k y_k A^(K-1-k). [..., K] -> [...]."""
    length = responses.shape[-1]
    powers = jnp.asarray(alphabet_size ** np.arange(length - 1, -1, -1), dtype=jnp.int32)
    return jnp.sum(responses * powers, axis=-1)


def prefix_nodes(responses: jax.Array, alphabet_size: int) -> jax.Array:
    """Prefix-tree node of the context y_<k that generates each token y_k.

    node(y_<k) = offsets[k] + value(y_<k), value(y_<k) = sum_{j<k} y_j A^(k-1-j).
    responses [..., K] int -> [..., K] int32 (column 0 is always the root, node 0).
    """
    length = responses.shape[-1]
    offsets = level_offsets(alphabet_size, length)
    value = jnp.zeros(responses.shape[:-1], jnp.int32)
    nodes = []
    for k in range(length):  # K is a small static int: a Python loop is clearest
        nodes.append(offsets[k] + value)
        value = value * alphabet_size + responses[..., k]
    return jnp.stack(nodes, axis=-1).astype(jnp.int32)


def sequence_logprobs_from_token_logprobs(token_logprobs: jax.Array, responses: jax.Array):
    """log pi(y | p) = sum_k log pi(y_k | p, y_<k) for every prompt and response.

    token_logprobs: [P, n_prefixes, A] log-softmaxed next-token table.
    responses: [N, K] int. Returns [P, N].
    """
    alphabet_size = token_logprobs.shape[-1]
    nodes = prefix_nodes(responses, alphabet_size)  # [N, K]
    per_token = token_logprobs[:, nodes, responses]  # [P, N, K]
    return jnp.sum(per_token, axis=-1)


# ----------------------------------------------------------------------------- world construction


def make_exact_world(cfg: ExactWorldConfig) -> ExactWorld:
    """Build the enumerable world (targets, gold reward table, reference policy) from cfg.seed."""
    _check_alphabet(cfg.alphabet_size, cfg.length)
    if cfg.n_prompts < 1:
        raise ValueError(f"exact/world.py: n_prompts must be >= 1, got {cfg.n_prompts}")
    return _build_world(cfg)


@partial(jax.jit, static_argnums=0)  # one compiled program instead of many small eager ops
def _build_world(cfg: ExactWorldConfig) -> ExactWorld:
    A, K, P = cfg.alphabet_size, cfg.length, cfg.n_prompts
    k_target, k_noise, k_ref = jax.random.split(jax.random.key(cfg.seed), 3)
    responses = all_responses(A, K)  # [N, K]
    targets = jax.random.randint(k_target, (P, K), 0, A, dtype=jnp.int32)  # [P, K]
    match = (responses[None, :, :] == targets[:, None, :]).mean(-1)  # [P, N]
    noise = jax.random.normal(k_noise, match.shape)  # [P, N]
    reward = match + cfg.noise_scale * noise  # [P, N]

    n_nodes = n_prefixes(A, K)
    ref_logits = cfg.ref_logit_scale * jax.random.normal(k_ref, (P, n_nodes, A))
    depth = np.repeat(np.arange(K), A ** np.arange(K))  # [n_nodes] depth of each node
    target_next = targets[:, depth]  # [P, n_nodes] the target's symbol at that depth
    ref_logits = ref_logits - cfg.ref_target_penalty * jax.nn.one_hot(target_next, A)
    logp_ref = sequence_logprobs_from_token_logprobs(
        jax.nn.log_softmax(ref_logits, axis=-1), responses
    )
    return ExactWorld(responses, targets, reward, ref_logits, logp_ref)


# ----------------------------------------------------------------------------- exact functionals


def log_normalize(logits: jax.Array) -> jax.Array:
    """log softmax over the response axis: logits - logsumexp(logits). [P, N] -> [P, N]."""
    return jax.nn.log_softmax(logits, axis=-1)


def normalize(weights: jax.Array) -> jax.Array:
    """weights / sum(weights) over the last axis (non-negative weights). [P, N] -> [P, N]."""
    return weights / jnp.sum(weights, axis=-1, keepdims=True)


def expected_reward(logp: jax.Array, reward: jax.Array) -> jax.Array:
    """E_{y ~ pi(.|p)}[r(p, y)] = sum_y pi(y|p) r(p, y). logp, reward: [P, N] -> [P]."""
    return jnp.sum(jnp.exp(logp) * reward, axis=-1)


def kl(logp: jax.Array, logq: jax.Array) -> jax.Array:
    """Exact KL(p || q) = sum_y p(y) (log p(y) - log q(y)) per prompt, with 0 log 0 = 0.

    logp, logq: [P, N] log-probabilities (may contain -inf). Returns [P] (inf if p puts mass
    where q has none). The double `where` keeps gradients finite where p = 0.
    """
    p = jnp.exp(logp)
    support = p > 0
    diff = jnp.where(support, logp - jnp.where(support, logq, 0.0), 0.0)
    return jnp.sum(jnp.where(support, p * diff, 0.0), axis=-1)


def optimal_policy(logp_ref: jax.Array, reward: jax.Array, beta) -> jax.Array:
    """The KL-regularised optimum  pi*_beta(y) = pi_ref(y) exp(r(y) / beta) / Z(beta).

    It maximises E_pi[r] - beta KL(pi || pi_ref) (Ziegler et al. 2019; Rafailov et al. 2023,
    eq. 4). Computed in log space: log pi* = log_softmax(log pi_ref + r / beta).
    beta -> 0 gives the argmax of r on the support of pi_ref; beta -> inf gives pi_ref.
    logp_ref, reward: [P, N]; beta > 0 scalar. Returns log pi* [P, N].
    """
    if isinstance(beta, (int, float)) and beta <= 0:
        raise ValueError(f"exact/world.py optimal_policy: beta must be > 0, got {beta}")
    return jax.nn.log_softmax(logp_ref + reward / beta, axis=-1)  # Rafailov et al. eq. 4


def ipo_optimal_policy(logp_ref: jax.Array, reward: jax.Array, beta, logp_mu=None):
    """IPO's population optimum for Bradley-Terry preferences (Azar et al. 2023: the PsiPO
    optimum of sec. 4 with Psi = identity, which IPO's loss attains, sec. 5):

        pi_IPO(y) ∝ pi_ref(y) exp( p(y > mu) / beta ),   p(y > mu) = E_{y' ~ mu} sigma(r(y) - r(y'))

    where mu is the policy the preference pairs were sampled from (default pi_ref). IPO
    maximises the preference *probability* against mu, not the BT reward, so this is not
    pi*_beta: it is bounded (p in [0, 1]) and stays close to pi_ref where DPO would not.
    logp_ref, reward: [P, N]; logp_mu: [P, N] or None. Returns log pi_IPO [P, N].
    """
    logp_mu = logp_ref if logp_mu is None else logp_mu
    win = jax.nn.sigmoid(reward[:, :, None] - reward[:, None, :])  # [P, N, N] P(y_i > y_j)
    p_beats_mu = jnp.einsum("pij,pj->pi", win, jnp.exp(logp_mu))  # [P, N]
    return jax.nn.log_softmax(logp_ref + p_beats_mu / beta, axis=-1)


def optimal_frontier(logp_ref: jax.Array, reward: jax.Array, betas: jax.Array):
    """The reward-vs-KL Pareto frontier traced by pi*_beta for each beta in `betas`.

    Returns (kl [M, P] = KL(pi*_beta || pi_ref), reward [M, P] = E_{pi*_beta}[r]).
    """

    def point(beta):
        logp_star = optimal_policy(logp_ref, reward, beta)
        return kl(logp_star, logp_ref), expected_reward(logp_star, reward)

    return jax.vmap(point)(jnp.asarray(betas, dtype=logp_ref.dtype))


def best_of_n_logprobs(logp_ref: jax.Array, reward: jax.Array, n: int) -> jax.Array:
    """Exact distribution of best-of-n: draw y_1..y_n iid from pi_ref, return the best.

    Tie-breaking rule: responses are totally ordered by (reward, response index), and the
    best-of-n sample is the maximum in that order (among equal rewards the larger index
    wins). With F(y) = pi_ref(responses <= y in that order) and F(y^-) = F(y) - pi_ref(y):

        P_bon(y) = F(y)^n - F(y^-)^n      (the max of n iid draws is <= y with prob F(y)^n)

    Computed in log space: log P = n log F + log(1 - exp(n (log F(y^-) - log F(y)))).
    logp_ref, reward: [P, N]; n >= 1. Returns log P_bon [P, N] (-inf where pi_ref(y) = 0).
    """
    if n < 1:
        raise ValueError(f"exact/world.py best_of_n_logprobs: n must be >= 1, got {n}")
    order = jnp.argsort(reward, axis=-1, stable=True)  # [P, N] ascending, ties by index
    logp_sorted = jnp.take_along_axis(logp_ref, order, axis=-1)  # [P, N]
    log_cdf = jax.lax.cumlogsumexp(logp_sorted, axis=logp_sorted.ndim - 1)  # [P, N] log F(y)
    log_cdf_below = jnp.concatenate(  # [P, N] log F(y^-)
        [jnp.full_like(log_cdf[:, :1], -jnp.inf), log_cdf[:, :-1]], axis=-1
    )
    has_mass = logp_sorted > -jnp.inf
    gap = jnp.where(has_mass, log_cdf_below - log_cdf, -1.0)  # <= 0; dummy where no mass
    log_p_sorted = n * log_cdf + jnp.log(-jnp.expm1(n * gap))
    log_p_sorted = jnp.where(has_mass, log_p_sorted, -jnp.inf)
    inverse = jnp.argsort(order, axis=-1)
    return jnp.take_along_axis(log_p_sorted, inverse, axis=-1)


def best_of_n_kl_bound(n: int) -> float:
    """KL(best-of-n || pi_ref) <= log n - (n - 1) / n.

    The formula is often quoted as the exact KL (e.g. Gao, Schulman & Hilton 2022, "Scaling
    laws for reward model overoptimization"); it is exact when no response has noticeable
    mass and an upper bound for discrete pi_ref (Beirami et al. 2024, "Theoretical
    guarantees on the best-of-n alignment policy").
    """
    if n < 1:
        raise ValueError(f"exact/world.py best_of_n_kl_bound: n must be >= 1, got {n}")
    return float(np.log(n) - (n - 1) / n)
