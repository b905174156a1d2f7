"""Every config rejects an out-of-range value at construction with a ValueError naming the field
(NaN included), and every default and smoke config still constructs.  No JAX compilation."""

import pytest

from minirlhf import (
    compare_capitals,
    dpo_train,
    model,
    ppo,
    ppo_train,
    pretrain,
    reward,
    reward_data,
    sft,
)
from minirlhf.exact import compare as exact_compare
from minirlhf.exact import ood as exact_ood
from minirlhf.exact import training as exact_training
from minirlhf.exact import world as exact_world
from minirlhf.worlds.capitals import CapitalsConfig

NAN = float("nan")
INF = float("inf")

BAD = [  # (config class, field, one bad value): the message must name the field
    (ppo.KLControllerConfig, "init_beta", -0.1),
    (ppo.KLControllerConfig, "init_beta", NAN),
    (ppo.KLControllerConfig, "target", 0.0),
    (ppo.KLControllerConfig, "horizon", 0.0),
    (ppo.KLControllerConfig, "horizon", NAN),
    (ppo.KLControllerConfig, "k_beta", -1.0),
    (ppo.PPOUpdateConfig, "n_epochs", 0),
    (ppo.PPOUpdateConfig, "n_minibatches", 0),
    (ppo.PPOUpdateConfig, "n_minibatches", 2.0),
    (ppo_train.PPOConfig, "n_iterations", 0),
    (ppo_train.PPOConfig, "batch_size", 0),
    (ppo_train.PPOConfig, "lr", 0.0),
    (ppo_train.PPOConfig, "lr", NAN),
    (ppo_train.PPOConfig, "max_grad_norm", 0.0),
    (ppo_train.PPOConfig, "clip_eps", -0.1),
    (ppo_train.PPOConfig, "clip_eps_v", 0.0),
    (ppo_train.PPOConfig, "clip_eps_v", NAN),
    (ppo_train.PPOConfig, "vf_coef", -1.0),
    (ppo_train.PPOConfig, "ent_coef", NAN),
    (ppo_train.PPOConfig, "gamma", 1.5),
    (ppo_train.PPOConfig, "lam", -0.1),
    (ppo_train.PPOConfig, "lam", NAN),
    (ppo_train.PPOConfig, "temperature", 0.0),
    (ppo_train.PPOConfig, "temperature", NAN),
    (ppo_train.PPOConfig, "prompt_len", 0),
    (ppo_train.PPOConfig, "max_new_tokens", 0),
    (ppo_train.PPOConfig, "ptx_coef", -1.0),
    (ppo_train.PPOConfig, "ptx_coef", NAN),
    (dpo_train.DPOConfig, "steps", 0),
    (dpo_train.DPOConfig, "batch_size", 0),
    (dpo_train.DPOConfig, "lr", 0.0),
    (dpo_train.DPOConfig, "lr", NAN),
    (dpo_train.DPOConfig, "warmup_steps", -1),
    (dpo_train.DPOConfig, "warmup_steps", 61),            # > steps = 60
    (dpo_train.DPOConfig, "weight_decay", -0.1),
    (dpo_train.DPOConfig, "beta", 0.0),
    (dpo_train.DPOConfig, "beta", NAN),
    (dpo_train.DPOConfig, "label_smoothing", NAN),
    (dpo_train.DPOConfig, "ptx_coef", -1.0),
    (dpo_train.DPOConfig, "ptx_coef", NAN),
    (reward.RewardConfig, "steps_head", 0),
    (reward.RewardConfig, "steps_full", 0),
    (reward.RewardConfig, "batch_responses", 0),
    (reward.RewardConfig, "eval_every", 0),
    (reward.RewardConfig, "n_reference_per_prompt", 0),
    (reward.RewardConfig, "lr_head", 0.0),
    (reward.RewardConfig, "lr_full", NAN),
    (reward.RewardConfig, "weight_decay", -0.1),
    (sft.SFTConfig, "steps", 0),
    (sft.SFTConfig, "demo_repeats", 0),
    (sft.SFTConfig, "batch_size", 0),
    (sft.SFTConfig, "lr", NAN),
    (sft.SFTConfig, "weight_decay", NAN),
    (pretrain.PretrainConfig, "steps", 0),
    (pretrain.PretrainConfig, "batch_size", -1),
    (pretrain.PretrainConfig, "lr", 0.0),
    (pretrain.PretrainConfig, "weight_decay", -0.01),
    (reward_data.PreferenceConfig, "groups_per_prompt", 0),
    (reward_data.PreferenceConfig, "responses_per_group", 1),
    (reward_data.PreferenceConfig, "eval_pairs_per_prompt", 0),
    (reward_data.PreferenceConfig, "temperature", NAN),
    (model.GPTConfig, "vocab_size", 0),
    (model.GPTConfig, "max_len", 0),
    (model.GPTConfig, "n_layer", 0),
    (model.GPTConfig, "n_head", 0),          # a message, not ZeroDivisionError
    (model.GPTConfig, "d_model", 0),
    (model.GPTConfig, "d_model", "128"),    # a message, not TypeError
    (model.GPTConfig, "mlp_ratio", 0),
    (model.GPTConfig, "n_layer", True),      # a bool is not a count
    # inf where a finite number is meant: learning rates, beta, temperatures, coefficients
    (ppo.KLControllerConfig, "init_beta", INF),
    (ppo_train.PPOConfig, "lr", INF),
    (ppo_train.PPOConfig, "temperature", INF),
    (ppo_train.PPOConfig, "vf_coef", INF),
    (ppo_train.PPOConfig, "seed", -1),
    (dpo_train.DPOConfig, "lr", INF),
    (dpo_train.DPOConfig, "beta", INF),
    (dpo_train.DPOConfig, "weight_decay", INF),
    (reward.RewardConfig, "lr_head", INF),
    (sft.SFTConfig, "lr", INF),
    (pretrain.PretrainConfig, "lr", INF),
    (pretrain.PretrainConfig, "seed", -1),
    (reward_data.PreferenceConfig, "temperature", INF),
    # a ratio clip of 1 or more lets rho fall to 0 (or below): clip_eps must be in (0, 1)
    (ppo_train.PPOConfig, "clip_eps", 1.0),
    (ppo_train.PPOConfig, "clip_eps", 1.5),
    (ppo_train.PPOConfig, "clip_eps", 0.0),
    (ppo_train.PPOConfig, "clip_eps_v", INF),
    # the capitals world
    (CapitalsConfig, "rater_tau", NAN),
    (CapitalsConfig, "rater_tau", INF),
    (CapitalsConfig, "qa_fraction", NAN),
    (CapitalsConfig, "n_corpus_docs", 0),
    # the exact world and its tabular trainers
    (exact_training.TabularPPOConfig, "beta", NAN),
    (exact_training.TabularPPOConfig, "beta", INF),
    (exact_training.TabularPPOConfig, "learning_rate", -0.1),
    (exact_training.TabularPPOConfig, "batch_size", 0),
    (exact_training.TabularPPOConfig, "n_iterations", 0),
    (exact_training.TabularPPOConfig, "clip_eps", 0.0),
    (exact_training.TabularPPOConfig, "clip_eps", 1.0),
    (exact_training.TabularPPOConfig, "clip_eps_v", -0.2),
    (exact_training.TabularPPOConfig, "gamma", NAN),
    (exact_training.TabularDPOConfig, "beta", NAN),
    (exact_training.TabularDPOConfig, "beta", 0.0),
    (exact_training.TabularDPOConfig, "learning_rate", -0.05),
    (exact_training.TabularDPOConfig, "learning_rate", INF),
    (exact_training.TabularDPOConfig, "batch_size", 0),
    (exact_training.TabularDPOConfig, "n_steps", 0),
    (exact_training.TabularDPOConfig, "n_pairs_per_prompt", 0),
    (exact_training.TabularDPOConfig, "label_smoothing", NAN),
    (exact_compare.PrefTrainConfig, "n_steps", 0),
    (exact_compare.PrefTrainConfig, "learning_rate", NAN),
    (exact_compare.PrefTrainConfig, "loss_type", "kto"),
    (exact_ood.OODConfig, "beta", NAN),
    (exact_ood.OODConfig, "n_support", 0),
    (exact_ood.OODConfig, "l2", -0.1),
    (exact_ood.OODConfig, "sft_learning_rate", INF),
    (exact_ood.OODConfig, "online_rounds", -1),
    (exact_ood.OveroptConfig, "rater_temperature", 0.0),
    (exact_ood.OveroptConfig, "n_pairs_per_prompt", 0),
    (exact_ood.OveroptConfig, "l2", NAN),
    (exact_ood.OveroptConfig, "bon_ns", (1, 0)),
    (exact_ood.OveroptConfig, "bon_ns", ()),
    (exact_world.ExactWorldConfig, "n_prompts", 0),
    (exact_world.ExactWorldConfig, "alphabet_size", 1),
    (exact_world.ExactWorldConfig, "length", 0),
    (exact_world.ExactWorldConfig, "noise_scale", NAN),
    (exact_world.ExactWorldConfig, "ref_logit_scale", -1.0),
    (exact_world.ExactWorldConfig, "ref_target_penalty", INF),
]


@pytest.mark.parametrize("cls, field, value", BAD,
                         ids=[f"{c.__name__}.{f}={v!r}" for c, f, v in BAD])
def test_bad_value_raises_value_error_naming_the_field(cls, field, value):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field}\b"):
        cls(**{field: value})


SMOKE_CLASSES = (pretrain.PretrainConfig, sft.SFTConfig, reward_data.PreferenceConfig,
                 reward.RewardConfig, ppo_train.PPOConfig, dpo_train.DPOConfig,
                 compare_capitals.CapitalsCompareConfig)


def test_default_smoke_and_in_use_configs_construct():
    for cls in (model.GPTConfig, ppo.KLControllerConfig, ppo.PPOUpdateConfig, CapitalsConfig,
                exact_training.TabularPPOConfig, exact_training.TabularDPOConfig,
                exact_compare.PrefTrainConfig, exact_ood.OODConfig, exact_ood.OveroptConfig,
                exact_world.ExactWorldConfig, *SMOKE_CLASSES):
        cls()
    for cls in SMOKE_CLASSES:
        cls.smoke()
    # values the lessons rely on: lesson 05's beta sweep (beta = 0, no ptx), plain DPO
    for beta in (0.0, 0.5, 2.0):
        ppo_train.PPOConfig(ptx_coef=0.0, kl=ppo.KLControllerConfig(init_beta=beta))
    dpo_train.DPOConfig(ptx_coef=0.0, warmup_steps=0)
    ppo_train.compiled_part(ppo_train.PPOConfig())
    exact_training.TabularDPOConfig(batch_size=None)   # None: full batch
    exact_training.TabularPPOConfig(clip_eps_v=None)


def test_check_fields_rules_on_edge_values():
    """Each rule on its boundary values, written out: the range it prints is the range it keeps."""
    import dataclasses

    from minirlhf.config import RULES, check_fields

    @dataclasses.dataclass
    class C:
        x: object

    keeps = {"counts": (1, 7), "naturals": (0, 3), "positive": (1e-30, 2.0),
             "non_negative": (0.0, 1e30), "finite": (-1e300, 0, 2.5), "unit": (0.0, 1.0, 0.5),
             "open_unit": (1e-9, 0.5, 0.999)}
    rejects = {"counts": (0, -1, 2.0, True), "naturals": (-1, 0.0, False), "positive": (0.0, INF, NAN),
               "non_negative": (-1e-30, INF, NAN), "finite": (INF, -INF, NAN, "1", True),
               "unit": (-1e-9, 1.0000001, NAN), "open_unit": (0.0, 1.0, NAN, INF)}
    assert set(keeps) == set(rejects) == set(RULES)
    for rule in RULES:
        for v in keeps[rule]:
            check_fields(C(v), **{rule: ("x",)})
        for v in rejects[rule]:
            with pytest.raises(ValueError, match=r"C\.x: expected"):
                check_fields(C(v), **{rule: ("x",)})
