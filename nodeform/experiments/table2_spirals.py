"""Train Table 2's models round-robin with evaluations at milestones: ``python -m nodeform.experiments.table2_spirals``.

One process trains a *group* of models (``--group ode``: the latent ODE at every
``n``; ``--group rnn``: both RNN baselines at every ``n``) under one
:class:`~nodeform.models.spiral_protocol.Protocol`, advancing all of them to the
same iteration milestone before any goes further. When the time runs out, every
model of the group has reached the same milestone, so a table taken at the
largest milestone reached by all is a like-for-like comparison. At each
milestone every model is scored on the test set (the same :func:`scores` as
Table 2) and its weights are saved; the training loss is logged every iteration.
Nothing here changes how a model is trained: the iterations, seeds and noise
draws are those of :func:`~nodeform.models.spiral_protocol.run_protocol`.

Output directory (``--out``, default ``runs/table2``)::

    <group>.json            protocol, per-model curve (iteration, loss, KL, NFE, gradient
                            norm before clipping), test scores at every milestone
    <model>_n<n>_it<k>.npz  the weights at milestone k (state_dict arrays)
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict

import numpy as np

from nodeform import optim
from nodeform.adjoint.odeint import SolveStats
from nodeform.data.spirals import CW_CURVES
from nodeform.models.spiral_protocol import (Protocol, clip_grad_norm, lr_schedule, make_model,
                                              prepare, scores, weight_seed)

#: Milestones (iterations) at which every model is scored and saved: dense early, where
#: the curves move, then every 500 up to the 4,000 of the first PyTorch attempt.
MILESTONES = (100, 250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2500, 3000, 3500, 4000)
#: Models trained by one process (``rnn_step``: the extra RNN, see ``MODEL_KINDS``).
GROUPS = {"ode": ("latent_ode",), "rnn": ("rnn_dt", "rnn"), "rnn_step": ("rnn_dt_step",)}
#: Values of protocol fields that results files written before the field existed used (the
#: current defaults differ): loading such a file must rebuild the models it trained.
LEGACY_PROTOCOL = {"dyn_act": "tanh", "dec_act": "tanh", "curve_points": 500, "init_seed": None,
                   "lr_final": None}
#: Groups that :func:`collect` requires (the others are added when their files exist).
REQUIRED_GROUPS = ("ode", "rnn")


class _Run:
    """One model, its optimizer and noise stream, trained a chunk at a time."""

    def __init__(self, p, kind, n):
        self.kind, self.n = kind, n
        self.D = D = prepare(p, n)
        seed = weight_seed(p)
        self.model = make_model(kind, p, D, rng=seed)
        if kind == "latent_ode":
            self.rng = np.random.default_rng([seed, 1])        # as train_latent_ode
        self.opt = optim.Adam(self.model.parameters(),
                              lr=lr_schedule(p, p.iters_ode if kind == "latent_ode" else p.iters_rnn))
        self.p, self.it, self.seconds, self.curve, self.evals = p, 0, 0.0, [], {}

    @property
    def name(self):
        return f"{self.kind}_n{self.n}"

    def train_to(self, target, log_every):
        D, st = self.D, SolveStats()
        t0 = time.perf_counter()
        while self.it < target:
            self.opt.zero_grad()
            if self.kind == "latent_ode":
                loss, info = self.model.loss(D["x_tr"], D["t"], D["m_tr"], self.rng, grad=self.p.grad,
                                             stats=st)
            else:
                loss, info = self.model.loss(D["x_tr"], D["t"], D["m_tr"]), {}
            loss.backward()
            gnorm = clip_grad_norm(self.model.parameters(), self.p.clip_norm)
            self.opt.step()
            self.curve.append([self.it, float(loss.data), info.get("kl", 0.0), st.nfe_forward, gnorm])
            st.reset()
            self.it += 1
            if log_every and self.it % log_every == 0:
                print(f"{self.name:16s} it {self.it:5d}  loss {float(loss.data):10.3f}  "
                      f"{self.seconds + time.perf_counter() - t0:7.1f} s", flush=True)
        self.seconds += time.perf_counter() - t0

    def evaluate(self):
        D = self.D
        if self.kind == "latent_ode":
            pred, _ = self.model.predict(D["x_te"], D["t"], D["m_te"], D["t_ext"])
        else:
            pred = self.model.predict(D["x_te"], D["t"], D["m_te"], D["t_ext"])
        s = scores(pred, D) | {"train_s": self.seconds, "iters": self.it,
                               "final_loss": float(np.mean([c[1] for c in self.curve[-20:]]))}
        self.evals[str(self.it)] = s
        return s


def run(group, p, milestones=MILESTONES, out="runs/table2", log_every=50):
    """Train the group's models to each milestone in turn; write ``<out>/<group>.json``."""
    if group not in GROUPS:
        raise ValueError(f"`group` must be one of {tuple(GROUPS)}, got {group!r}.")
    os.makedirs(out, exist_ok=True)
    runs = [_Run(p, kind, n) for n in p.n_obs for kind in GROUPS[group]]
    path = os.path.join(out, f"{group}.json")
    for m in milestones:
        for r in runs:
            r.train_to(m, log_every)
            s = r.evaluate()
            np.savez(os.path.join(out, f"{r.name}_it{m}.npz"), **r.model.state_dict())
            print(f"== {r.name} milestone {m}: test RMSE {s['noisy']:.4f} (first 50 "
                  f"{s['noisy_first50']:.4f}, cw {s['noisy_cw']:.4f}, ccw {s['noisy_ccw']:.4f}) "
                  f"{r.seconds:.0f} s", flush=True)
        doc = {"protocol": asdict(p), "group": group, "milestone_reached": m,
               "models": {r.name: {"kind": r.kind, "n": r.n, "evals": r.evals, "curve": r.curve}
                          for r in runs}}
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh, default=float)
        os.replace(tmp, path)
    return path


def collect(out="runs/table2", milestone=None, curve_every=10):
    """Assemble Table 2 from the groups' files in ``out`` at one milestone.

    Parameters
    ----------
    out : str
        Directory holding ``ode.json``, ``rnn.json`` and the weights (from :func:`run`).
    milestone : int, optional
        Default: the largest milestone every group has reached.
    curve_every : int
        Keep every so many points of the loss curves.

    Returns
    -------
    results : dict
        ``{"protocol": {group: protocol}, "milestone": m, "results": {n: {model: scores}},
        "rmse_by_milestone": {model_n: {it: rmse}}, "curves": {model_n: [[it, loss], ...]}}``;
        ``results["results"]`` has the layout of :func:`~nodeform.models.spiral_protocol.run_protocol`.
    weights : dict
        ``{"<model>_n<n>/<parameter>": array}`` at the milestone.
    """
    docs = {}
    for g in GROUPS:
        path = os.path.join(out, f"{g}.json")
        if g not in REQUIRED_GROUPS and not os.path.exists(path):
            continue
        with open(path) as fh:
            docs[g] = json.load(fh)
    m = min(d["milestone_reached"] for d in docs.values()) if milestone is None else int(milestone)
    res = {"protocol": {g: d["protocol"] for g, d in docs.items()}, "milestone": m, "results": {},
           "rmse_by_milestone": {}, "curves": {}}
    weights = {}
    for d in docs.values():
        for name, r in d["models"].items():
            if str(m) not in r["evals"]:
                raise ValueError(f"`milestone` {m} was not reached by {name} in {out}; reached: "
                                 f"{sorted(map(int, r['evals']))}.")
            res["results"].setdefault(str(r["n"]), {})[r["kind"]] = r["evals"][str(m)]
            res["rmse_by_milestone"][name] = {k: v["noisy"] for k, v in r["evals"].items()}
            res["curves"][name] = [c[:2] for c in r["curve"][::curve_every]]
            with np.load(os.path.join(out, f"{name}_it{m}.npz")) as z:
                weights.update({f"{name}/{k}": z[k] for k in z.files})
    res["results"] = {n: res["results"][n] for n in sorted(res["results"], key=int)}
    return res, weights


def summarize(outs, milestone=None, last=4):
    """Table 2 over several trainings (e.g. one directory per ``--init-seed``).

    Parameters
    ----------
    outs : sequence of str
        Directories written by :func:`run` (each with ``ode.json`` and ``rnn.json``).
    milestone : int, optional
        Default: the largest milestone every group of every directory reached.
    last : int
        Also average each training's test RMSE over its last ``last`` milestones up to
        ``milestone`` (the RNNs' scores jump between neighbouring milestones).

    Returns
    -------
    dict
        ``{"milestone": m, "dirs": outs, "rmse": {n: {kind: {"runs": [...], "mean", "min",
        "max", "last_mean": [...], "last_mean_mean", "truth": [...], "truth_mean"}}}}``.
    """
    res = [collect(o, milestone=None)[0] for o in outs]
    m = min(r["milestone"] for r in res) if milestone is None else int(milestone)
    res = [collect(o, milestone=m)[0] for o in outs]
    table = {}
    for r in res:
        for name, by_it in r["rmse_by_milestone"].items():
            kind, n = name.rsplit("_n", 1)
            its = sorted(i for i in map(int, by_it) if i <= m)[-int(last):]
            e = table.setdefault(n, {}).setdefault(kind, {"runs": [], "last_mean": [], "truth": []})
            e["runs"].append(by_it[str(m)])
            e["last_mean"].append(float(np.mean([by_it[str(i)] for i in its])))
            e["truth"].append(r["results"][n][kind]["truth"])
    for per_n in table.values():
        for e in per_n.values():
            e.update(mean=float(np.mean(e["runs"])), min=float(np.min(e["runs"])),
                     max=float(np.max(e["runs"])), last_mean_mean=float(np.mean(e["last_mean"])),
                     truth_mean=float(np.mean(e["truth"])))
    return {"milestone": m, "dirs": list(outs), "last": int(last),
            "rmse": {n: table[n] for n in sorted(table, key=int)}}


def load_models(weights, protocol, n, extra=False):
    """The data and the three trained models at ``n`` from :func:`collect`'s weights.

    Returns ``(D, latent_ode, rnn_dt, rnn)`` as ``run_protocol(keep=...)`` does; with
    ``extra=True`` a fifth item, ``{kind: model}`` for the other kinds found in ``weights``
    (the ``rnn_dt_step`` baseline).
    """
    protocol = LEGACY_PROTOCOL | dict(protocol)
    p = Protocol(**{k: tuple(v) if k == "n_obs" else v for k, v in protocol.items()})
    D = prepare(p, n)
    kinds = {k.split("/", 1)[0].rsplit("_n", 1)[0] for k in weights
             if k.split("/", 1)[0].endswith(f"_n{n}")}
    models = {}
    for kind in ("latent_ode", "rnn_dt", "rnn", *sorted(kinds - {"latent_ode", "rnn_dt", "rnn"})):
        models[kind] = make_model(kind, p, D)
        pre = f"{kind}_n{n}/"
        models[kind].load_state_dict({k[len(pre):]: v for k, v in weights.items() if k.startswith(pre)})
    out = (D, models.pop("latent_ode"), models.pop("rnn_dt"), models.pop("rnn"))
    return out + (models,) if extra else out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", choices=tuple(GROUPS), required=True)
    ap.add_argument("--n", type=int, nargs="+", default=[30, 50, 100])
    ap.add_argument("--milestones", type=int, nargs="+", default=list(MILESTONES))
    ap.add_argument("--lr", type=float, default=Protocol.lr)
    ap.add_argument("--lr-final", type=float, default=None,
                    help="decay the rate exponentially to this at the last milestone (default: constant)")
    ap.add_argument("--clip-norm", type=float, default=Protocol.clip_norm,
                    help="global gradient-norm clip (0: none)")
    ap.add_argument("--ode-dtype", choices=("float64", "float32"), default=Protocol.ode_dtype)
    ap.add_argument("--cw-curve", choices=CW_CURVES, default=Protocol.cw_curve,
                    help="the clockwise arm (nodeform.data.spirals.spiral_curve)")
    ap.add_argument("--curve-points", type=int, default=Protocol.curve_points,
                    help="grid points on the spiral curve's [0, 6π] (500 or 1000)")
    ap.add_argument("--dyn-act", default=Protocol.dyn_act, choices=("tanh", "softplus", "elu"),
                    help="hidden activation of the latent dynamics")
    ap.add_argument("--dec-act", default=Protocol.dec_act, choices=("tanh", "relu", "elu", "softplus"),
                    help="hidden activation of the latent ODE's decoder")
    ap.add_argument("--seed", type=int, default=Protocol.seed, help="data seed")
    ap.add_argument("--init-seed", type=int, default=None,
                    help="seed of the weights and the latent ODE's noise (default: --seed)")
    ap.add_argument("--out", default="runs/table2")
    ap.add_argument("--log-every", type=int, default=50)
    a = ap.parse_args(argv)
    p = Protocol(lr=a.lr, lr_final=a.lr_final, n_obs=tuple(a.n), ode_dtype=a.ode_dtype,
                 clip_norm=a.clip_norm or None, cw_curve=a.cw_curve, curve_points=a.curve_points,
                 dyn_act=a.dyn_act, dec_act=a.dec_act, seed=a.seed, init_seed=a.init_seed,
                 iters_ode=max(a.milestones), iters_rnn=max(a.milestones))
    print("protocol:", p, flush=True)
    print("wrote", run(a.group, p, a.milestones, a.out, a.log_every))


if __name__ == "__main__":
    main()
