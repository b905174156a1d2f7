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

NAN = float("nan")

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
    for cls in (model.GPTConfig, ppo.KLControllerConfig, ppo.PPOUpdateConfig, *SMOKE_CLASSES):
        cls()
    for cls in SMOKE_CLASSES:
        cls.smoke()
    # values the lessons rely on: lesson 05's beta sweep (beta = 0, no ptx), plain DPO
    for beta in (0.0, 0.5, 2.0):
        ppo_train.PPOConfig(ptx_coef=0.0, kl=ppo.KLControllerConfig(init_beta=beta))
    dpo_train.DPOConfig(ptx_coef=0.0, warmup_steps=0)
    ppo_train.compiled_part(ppo_train.PPOConfig())
