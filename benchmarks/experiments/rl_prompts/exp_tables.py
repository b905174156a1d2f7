"""Tables from runs/results_seed0.json + runs/results.json (seeds 1, 2), and an RM probe."""
import json
import numpy as np
d = json.load(open("runs/results_seed0.json"))
d.update({k: v for k, v in json.load(open("runs/results_seeds12.json")).items() if "seed" in k})
d.update({k: v for k, v in json.load(open("runs/results_rm15.json")).items() if "rm1.5x" in k})
S = ("train", "rl", "heldout", "ood")
print("SFT", {s: round(d["SFT"][s]["acc"], 3) for s in S})
for arm in ("baseline", "treatment", "treatment_rm1.5x"):
    rm = d[f"{arm}/rm"]; m = rm["metrics"][rm["regime"]]
    print(f"{arm} RM ({rm['regime']}, pairs {d.get(f'{arm}/n_pairs', 'same as treatment')}): " + "  ".join(
        f"{s} acc {m[s]['accuracy']:.3f}/bayes {m[s]['bayes_rate']:.3f}/goldagree {m[s]['gold_agreement']:.3f}"
        for s in ("valid", "heldout", "rl", "ood")), "canon", rm["canonical_ranking"])
seeds = sorted({int(k.split("seed")[1]) for k in d if "/seed" in k})
print("seeds", seeds)
print(f"{'gold acc (mean±std)':<28}" + "".join(f"{s:>16}" for s in S))
print(f"{'SFT':<28}" + "".join(f"{d['SFT'][s]['acc']:>16.3f}" for s in S))
def runs():
    """(arm, method, [result of each seed]) for every arm/method that has results."""
    for arm in ("baseline", "treatment", "treatment_rm1.5x"):
        for m in ("PPO ptx=0", "PPO ptx=1", "DPO ptx=0", "DPO ptx=1"):
            rows = [d[f"{arm}/{m}/seed{sd}"] for sd in seeds if f"{arm}/{m}/seed{sd}" in d]
            if rows:
                yield arm, m, rows
for arm, m, rows in runs():
    a = np.array([[r[s]["acc"] for s in S] for r in rows])
    print(f"{arm + ' ' + m + f' (n={len(rows)})':<28}" + "".join(f"{a[:, j].mean():>9.3f}±{a[:, j].std():.3f}" for j in range(4)))
print("\nother-country restatement (canonical form w/ asked country), mean over seeds")
print(f"{'':<28}" + "".join(f"{s:>16}" for s in S))
print(f"{'SFT':<28}" + "".join(f"{d['SFT'][s]['other_country']:>8.3f} ({d['SFT'][s]['canonical_form']:.2f})" for s in S))
for arm, m, rows in runs():
    print(f"{arm + ' ' + m:<28}" + "".join(
        f"{np.mean([r[s]['other_country'] for r in rows]):>8.3f} ({np.mean([r[s]['canonical_form'] for r in rows]):.2f})" for s in S))
