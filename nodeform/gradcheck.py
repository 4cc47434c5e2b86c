"""Check reverse-mode gradients against finite differences: a tool for your own models.

Two tests, as autograd's ``check_grads`` and minitorch's ``grad_check`` do them:

* **Elementwise (``mode="full"``).** For a random output cotangent ``v``, the
  scalar ``s(x) = <v, fun(x)>`` is differentiated by reverse mode and, entry by
  entry, by central differences ``(s(x + eps e_i) - s(x - eps e_i)) / (2 eps)``.
  It names the worst argument and index. Cost: two evaluations per input entry.
* **Dot product (``mode="dot"``).** For random directions ``u``, compare the
  directional derivative ``(s(x + eps u) - s(x - eps u)) / (2 eps)`` with
  ``<grad s, u>``. Two evaluations per direction whatever the input size, so it
  scales to the ODE adjoint and to whole networks.

The default ``mode="auto"`` runs the elementwise check on small inputs and the
dot-product test on big ones. ``order=2`` also checks the gradient of the
gradient (reverse over reverse, through ``create_graph=True``).

A failed check never raises: the result's ``ok`` is False and its ``text`` says
where and by how much. Bad arguments do raise. Use float64: in float32 the
round-off error of a central difference (about ``1e-7 / eps``) swamps the check.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nodeform.autodiff.tensor import Tensor, backprop, enable_grad, no_grad
from nodeform.backend import to_numpy

#: Entries up to which ``mode="auto"`` runs the elementwise check (2 evaluations each).
FULL_CHECK_MAX_ENTRIES = 256
#: Step of the central difference: about cbrt(machine epsilon) balances truncation and round-off.
DEFAULT_EPS = 1e-6


@dataclass
class GradcheckResult:
    """The outcome of :func:`gradcheck`.

    Attributes
    ----------
    ok : bool
        Every compared value within ``atol + rtol * |numeric|``.
    max_error : float
        The largest ``|analytic - numeric| / (atol + rtol * |numeric|)`` seen (<= 1 passes).
    text : str
        A readable report; on failure it names the argument, the index (or the
        direction), the analytic and the numeric value.
    worst : dict
        The worst comparison: ``arg``, ``index``, ``analytic``, ``numeric``, ``test``.
    checks : list of dict
        Every comparison made.
    """

    ok: bool
    max_error: float
    text: str
    worst: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)

    def __bool__(self):
        return self.ok

    def __str__(self):
        return self.text


def _validate(fun, inputs, eps, rtol, atol, mode, order, wrt):
    if not callable(fun):
        raise TypeError(f"`fun` must be callable, got {type(fun).__name__}.")
    if not inputs:
        raise ValueError("`gradcheck` needs at least one input after `fun`.")
    for name, v in (("eps", eps), ("rtol", rtol)):
        if not (np.isscalar(v) and v > 0):
            raise ValueError(f"`{name}` must be a positive number, got {v!r}.")
    if not (np.isscalar(atol) and atol >= 0):
        raise ValueError(f"`atol` must be a number >= 0, got {atol!r}.")
    if mode not in ("auto", "full", "dot", "both"):
        raise ValueError(f"`mode` must be 'auto', 'full', 'dot' or 'both', got {mode!r}.")
    if order not in (1, 2):
        raise ValueError(f"`order` must be 1 or 2, got {order!r}.")
    arrays = []
    for k, x in enumerate(inputs):
        a = x.data if isinstance(x, Tensor) else x
        if not hasattr(a, "dtype"):
            a = np.asarray(a, dtype=np.float64)
        elif isinstance(a, np.generic):
            a = np.asarray(a)
        arrays.append(a)
    wrt = [k for k, a in enumerate(arrays) if a.dtype.kind == "f"] if wrt is None else list(wrt)
    for k in wrt:
        if not 0 <= k < len(arrays):
            raise ValueError(f"`wrt` entry {k} is out of range for {len(arrays)} inputs.")
        if arrays[k].dtype.kind != "f":
            raise TypeError(f"input {k} has dtype {arrays[k].dtype}; only floating-point inputs "
                            "can be checked. Leave it out of `wrt`.")
    if not wrt:
        raise ValueError("no floating-point input to check; pass float64 arrays.")
    return arrays, wrt


def _make_scalar(fun, arrays, wrt, rng):
    """``s(xs) = <v, fun(xs)>`` with a fixed random cotangent ``v``, and its reverse-mode gradient."""
    with no_grad():
        out0 = fun(*[Tensor(a) for a in arrays])
    if not isinstance(out0, Tensor):
        raise TypeError(f"`fun` must return a Tensor, got {type(out0).__name__}.")
    xp = out0.xp
    v = xp.asarray(rng.standard_normal(out0.shape).astype(out0.dtype))

    def value(arrs):
        with no_grad():
            out = fun(*[Tensor(a) for a in arrs])
        return float((out.data * v).sum())

    def gradient(arrs):
        with enable_grad():
            ts = [Tensor(a) for a in arrs]
            for k in wrt:
                ts[k].requires_grad_(True)
            out = fun(*ts)
            if not out.requires_grad:
                return [xp.zeros_like(arrs[k]) for k in wrt]
            gs = backprop(out, v, [ts[k] for k in wrt])
        return [g.data if g is not None else xp.zeros_like(arrs[k]) for g, k in zip(gs, wrt)]

    return value, gradient


def _compare(checks, analytic, numeric, rtol, atol, **where):
    err = abs(analytic - numeric) / (atol + rtol * abs(numeric))
    checks.append(dict(where, analytic=analytic, numeric=numeric, error=err))


def _check_first_order(fun, arrays, wrt, eps, rtol, atol, mode, n_directions, rng, label=""):
    value, gradient = _make_scalar(fun, arrays, wrt, rng)
    grads = gradient(arrays)
    checks = []
    total = sum(arrays[k].size for k in wrt)
    full = mode in ("full", "both") or (mode == "auto" and total <= FULL_CHECK_MAX_ENTRIES)
    dot = mode in ("dot", "both") or (mode == "auto" and not full)
    if full:
        for k, g in zip(wrt, grads):
            a = arrays[k]
            g_np = to_numpy(g)
            for idx in np.ndindex(a.shape):
                plus, minus = a.copy(), a.copy()
                plus[idx] += eps
                minus[idx] -= eps
                arrs_p = list(arrays); arrs_p[k] = plus
                arrs_m = list(arrays); arrs_m[k] = minus
                num = (value(arrs_p) - value(arrs_m)) / (2 * eps)
                _compare(checks, float(g_np[idx]), num, rtol, atol,
                         test=f"{label}elementwise", arg=k, index=idx)
    if dot:
        for d in range(n_directions):
            us = {k: _like(arrays[k], rng.standard_normal(arrays[k].shape)) for k in wrt}
            arrs_p = [a + eps * us[k] if k in us else a for k, a in enumerate(arrays)]
            arrs_m = [a - eps * us[k] if k in us else a for k, a in enumerate(arrays)]
            num = (value(arrs_p) - value(arrs_m)) / (2 * eps)
            ana = float(sum(float((g * us[k]).sum()) for k, g in zip(wrt, grads)))
            _compare(checks, ana, num, rtol, atol, test=f"{label}dot-product",
                     arg=tuple(wrt), index=f"random direction {d}")
    return checks


def _like(a, values):
    """``values`` (NumPy) as an array of ``a``'s module and dtype."""
    from nodeform.backend import get_xp
    return get_xp(a).asarray(values.astype(a.dtype))


def gradcheck(fun, *inputs, eps=DEFAULT_EPS, rtol=1e-5, atol=1e-8, mode="auto",
              n_directions=3, order=1, wrt=None, seed=0):
    """Compare the reverse-mode gradient of ``fun`` with finite differences.

    Parameters
    ----------
    fun : callable
        Maps Tensors (one per input) to a Tensor of any shape.
    *inputs : array_like or Tensor
        Where to check; float64 recommended (a failed check in float32 says so: its
        central differences are mostly round-off).
    eps : float
        Central-difference step.
    rtol, atol : float
        A comparison passes when ``|analytic - numeric| <= atol + rtol * |numeric|``.
    mode : {"auto", "full", "dot", "both"}
        Elementwise check, dot-product test, or both; ``auto`` picks by input size.
    n_directions : int
        Random directions for the dot-product test.
    order : {1, 2}
        ``2`` also checks the gradient of the gradient.
    wrt : sequence of int, optional
        Which inputs to check (default: every floating-point input).
    seed : int
        Seed of the random cotangent and directions.

    Returns
    -------
    GradcheckResult
        Truthy when the check passed; ``print(result)`` explains a failure.

    Examples
    --------
    >>> import numpy as np, nodeform as nf
    >>> nf.gradcheck(lambda x: nf.tanh(x) * x, np.linspace(-1, 1, 5)).ok
    True
    """
    arrays, wrt = _validate(fun, inputs, eps, rtol, atol, mode, order, wrt)
    with no_grad():
        out0 = fun(*[Tensor(a) for a in arrays])
    if isinstance(out0, Tensor) and not bool(out0.xp.isfinite(out0.data).all()):
        bad = np.argwhere(~np.isfinite(to_numpy(out0.data)))[0]
        return GradcheckResult(False, float("inf"), (
            f"gradcheck FAILED for `{getattr(fun, '__name__', 'fun')}`: it returns non-finite "
            f"values at these inputs (first at output index {tuple(int(i) for i in bad)}), so "
            "neither gradient can be checked there. Check at inputs where the function is "
            "finite, or look for an overflow (exp of a large number) or a log/sqrt of a "
            "negative."), {}, [])
    rng = np.random.default_rng(seed)
    checks = _check_first_order(fun, arrays, wrt, eps, rtol, atol, mode, n_directions, rng)
    if order == 2:
        # The first-order gradient, as a function of the inputs, checked in its turn.
        w_rng = np.random.default_rng(seed + 1)
        with no_grad():
            out0 = fun(*[Tensor(a) for a in arrays])
        v = out0.xp.asarray(w_rng.standard_normal(out0.shape).astype(out0.dtype))

        def grad_fun(*ts):
            ts = list(ts)
            for k in wrt:
                if not ts[k].requires_grad:
                    ts[k] = Tensor(ts[k].data).requires_grad_(True)
            with enable_grad():
                out = fun(*ts)
                gs = backprop(out, v, [ts[k] for k in wrt], create_graph=True)
            from nodeform.autodiff.functions import concatenate, reshape
            return concatenate([reshape(g, -1) for g in gs])

        checks += _check_first_order(grad_fun, arrays, wrt, eps, rtol * 10, atol * 10, mode,
                                     n_directions, rng, label="second-order ")
    dtypes = {str(arrays[k].dtype) for k in wrt}
    if isinstance(out0, Tensor):
        dtypes.add(str(out0.dtype))
    return _report(fun, checks, sorted(d for d in dtypes if d != "float64"))


def _report(fun, checks, low_precision=()):
    worst = max(checks, key=lambda c: c["error"]) if checks else {}
    max_err = worst.get("error", 0.0)
    ok = bool(max_err <= 1.0) and all(np.isfinite(c["analytic"]) for c in checks)
    name = getattr(fun, "__name__", "fun")
    n_bad = sum(c["error"] > 1.0 for c in checks)
    if ok:
        text = (f"gradcheck passed for `{name}`: {len(checks)} comparisons, worst "
                f"{max_err:.3g} of the tolerance ({worst.get('test', '')}).")
    else:
        text = (f"gradcheck FAILED for `{name}`: {n_bad} of {len(checks)} comparisons out of "
                f"tolerance. Worst: {worst['test']} check, argument {worst['arg']}, index "
                f"{worst['index']}: analytic {worst['analytic']:.10g}, numeric "
                f"{worst['numeric']:.10g} (error {max_err:.3g} times the tolerance).")
        if low_precision:
            text += (f" Likely cause: the check ran in {', '.join(low_precision)}, whose "
                     "round-off (about 1e-7 / eps in a central difference) swamps it; pass "
                     "float64 inputs (and compute in float64) before suspecting the gradient.")
    return GradcheckResult(ok, float(max_err), text, worst, checks)
