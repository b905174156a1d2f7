"""The exact world: a preference problem small enough to enumerate, so every quantity of the
course (expected reward, KL, the optimum pi*_beta, a loss's population minimiser) is a sum.

    world       the enumerable world: A^K responses, gold rewards, pi_ref, pi*_beta, best-of-n
    tabular     tabular prefix-tree policies and their exact sequence log-probs
    training    exact-gradient PPO / DPO / IPO on tabular policies (do they reach pi*_beta?)
    compare     the reward-KL frontier and other exact comparisons of PPO, DPO and best-of-n
    ood         preferences that cover only part of the responses; overoptimisation of a proxy
"""
