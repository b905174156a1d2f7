"""RM probe: per prompt, r(right canonical) vs r(canonical restating ANOTHER country with that country's
true capital), averaged over all other countries; and vs the neighbour-capital canonical answer."""
import numpy as np
from minirlhf.checkpoint import load_checkpoint
from minirlhf.pretrain import SEQ_LEN, ensure_tokenizer
from minirlhf.reward import score_batched
from minirlhf.reward_data import encode_responses
from minirlhf.worlds.capitals import CAPITAL, COUNTRIES, FACTS, SPLITS, canonical_answer, make_prompt

tok = ensure_tokenizer(False)
for arm in ("baseline", "treatment", "treatment_rm1.5x"):
    rm, cfg, _ = load_checkpoint(f"runs/{arm}/reward.ckpt")
    out = []
    for split in ("train", "rl", "heldout"):
        win_other, win_nb = [], []
        for c in SPLITS[split]:
            others = [o for o in COUNTRIES if o != c]
            resp = [canonical_answer(c), canonical_answer(c, CAPITAL[FACTS[c][1]])] + [canonical_answer(o) for o in others]
            enc = encode_responses(tok, [make_prompt(c)] * len(resp), resp, [True] * len(resp), SEQ_LEN)
            r = score_batched(rm, enc.tokens, enc.attention_mask, cfg)
            win_nb.append(r[0] > r[1]); win_other.append(np.mean(r[0] > r[2:]))
        out.append(f"{split}: right>neighbour-capital {np.mean(win_nb):.3f}, right>other-country-restated {np.mean(win_other):.3f}")
    print(arm, " | ".join(out))
