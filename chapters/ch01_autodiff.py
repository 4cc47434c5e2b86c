# %% [markdown]
# # Chapter 1 — Reverse-mode automatic differentiation
#
# **Why the paper needs it.** The adjoint method of Chen et al. (2018, Sec. 2)
# integrates, backwards in time,
#
# $$\frac{d\mathbf a(t)}{dt} = -\mathbf a(t)^\top \frac{\partial f(\mathbf z(t), t, \theta)}{\partial \mathbf z},
# \qquad \frac{dL}{d\theta} = -\int_{t_1}^{t_0} \mathbf a(t)^\top \frac{\partial f}{\partial \theta}\,dt .$$
#
# Neither formula needs the Jacobian $\partial f/\partial \mathbf z$ itself, only a
# row vector times it: a **vector–Jacobian product** (VJP). For a network with a
# million parameters the Jacobian has a million columns, but one VJP costs about
# one evaluation of $f$. Reverse mode is exactly "compute VJPs of a program by
# chaining the VJPs of its primitives".
#
# **Learning goals.** After this chapter you can
# 1. write the VJP of a primitive, including the sum that undoes broadcasting;
# 2. build a reverse-mode engine over arrays: a graph, a topological order, and
#    cotangents accumulated from the output back to the inputs;
# 3. record the backward pass itself (`create_graph`) to get gradients of gradients;
# 4. prove a gradient right with central differences, and say how accurate they are.
#
# **Prerequisites.** NumPy and its broadcasting rules; the chain rule. Refreshers:
# * *Jacobian.* For $f:\mathbb R^n\to\mathbb R^m$, $J_{ij} = \partial f_i/\partial x_j$,
#   an $m\times n$ matrix; the chain rule is $J_{g\circ f} = J_g J_f$.
# * *VJP.* For a row vector $v\in\mathbb R^m$ (the "cotangent" of the output), the
#   VJP is $v^\top J\in\mathbb R^n$. For a scalar loss $L(f(x))$ with
#   $v = \partial L/\partial f$, it *is* $\partial L/\partial x$. Reverse mode never
#   forms $J$; each primitive knows how to map $v$ to $v^\top J$ directly.
#
# **Time to work through:** about 2 hours (90 minutes reading and running, the rest
# for the exercises you pick).
#
# **Where it lives.** The library version of everything built here is
# `nodeform/autodiff/` (`tensor.py`: graph and backward pass; `vjps.py`: the derivative
# table; `primitive.py`: `defprim`) and `nodeform/gradcheck.py`.

# %%
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

import nodeform as nf
from nodeform.plotting import is_quick, savefig
from nodeform.testing import check, numerical_jacobian

QUICK = is_quick()   # in a notebook: is_quick(True) for the quick run
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Reverse mode in thirty lines
#
# A program is a chain of primitives $y = f_K(\dots f_2(f_1(x)))$. The chain rule
# read from the output end is
# $\bar x = J_1^\top(\dots J_K^\top \bar y)$: start from the cotangent
# $\bar y = \partial L/\partial y$, and let each primitive turn the cotangent of its
# output into cotangents of its inputs. That is all a primitive must know: its
# forward code and its VJP. Here is the whole idea on scalars, micrograd style.

# %%
class Scalar:
    """A number that remembers how it was made."""

    def __init__(self, value, parents=(), vjps=()):
        self.value, self.parents, self.vjps, self.grad = value, parents, vjps, 0.0

    def __add__(self, other):
        return Scalar(self.value + other.value, (self, other), (lambda g: g, lambda g: g))

    def __mul__(self, other):
        return Scalar(self.value * other.value, (self, other),
                      (lambda g: g * other.value, lambda g: g * self.value))

    def tanh(self):
        t = np.tanh(self.value)
        return Scalar(t, (self,), (lambda g: g * (1 - t * t),))

    def exp(self):
        e = np.exp(self.value)
        return Scalar(e, (self,), (lambda g: g * e,))

    def __pow__(self, p):
        """self ** p for a constant number p (exercise ex1_2)."""
        # BEGIN SOLUTION ex1_2
        return Scalar(self.value ** p, (self,), (lambda g: g * p * self.value ** (p - 1),))
        # END SOLUTION ex1_2

    def backward(self):
        order, seen = [], set()

        def visit(node):                     # topological order: inputs first
            if id(node) not in seen:
                seen.add(id(node))
                for p in node.parents:
                    visit(p)
                order.append(node)
        visit(self)
        self.grad = 1.0
        for node in reversed(order):         # outputs first: every cotangent is complete
            for parent, vjp in zip(node.parents, node.vjps):
                parent.grad += vjp(node.grad)


a, b = Scalar(0.5), Scalar(-1.5)
y = (a * b + a).tanh()
y.backward()
print(f"scalar engine: dy/da = {a.grad:.6f}, dy/db = {b.grad:.6f}")
# by hand: y = tanh(ab + a), dy/da = (1 - y^2)(b + 1), dy/db = (1 - y^2) a
check("ch01.scalar_engine",
      np.isclose(a.grad, (1 - y.value ** 2) * (-1.5 + 1), rtol=1e-15)
      and np.isclose(b.grad, (1 - y.value ** 2) * 0.5, rtol=1e-15),
      "dy/da, dy/db equal the hand-derived (1 - y^2)(b + 1), (1 - y^2) a to 1e-15")

# %% [markdown]
# ## 2. Build: a small array Tensor
#
# Over arrays three things change.
#
# * **Broadcasting must be undone.** If `b` of shape `(4,)` was added to `x` of shape
#   `(5, 4)`, `b` was used five times, so its cotangent is the *sum* of the five rows
#   of the output's cotangent. `unbroadcast` sums over the axes that broadcasting
#   added (leading ones) or stretched (size-1 ones).
# * **A value may be used many times** (`x * x`, a weight in every layer), so its
#   cotangent is the sum of the cotangents of all its uses. That is why the backward
#   pass runs in *reverse topological order*: a node's cotangent is passed on only
#   once every use of it has contributed.
# * **VJPs are written with Tensor operations.** Then the backward pass is itself a
#   program made of primitives; with `create_graph=True` it is recorded, and its
#   result can be differentiated again (gradients of gradients).
#
# Each primitive below is a function: forward value, then one VJP per input,
# `g -> cotangent of that input`.

# %%
RECORD = [True]   # False during a backward pass without create_graph: nothing is recorded


class Tiny:
    """An array that remembers how it was made: its parents and one VJP per parent."""

    def __init__(self, value, parents=(), vjps=(), requires_grad=False):
        self.value = np.asarray(value, dtype=np.float64)
        self.parents, self.vjps = parents, vjps
        self.requires_grad = requires_grad or bool(parents)

    shape = property(lambda self: self.value.shape)
    ndim = property(lambda self: self.value.ndim)
    T = property(lambda self: transpose(self))
    __add__ = __radd__ = lambda self, other: add(self, other)
    __mul__ = __rmul__ = lambda self, other: mul(self, other)
    __sub__ = lambda self, other: add(self, mul(other, -1.0))
    __rsub__ = lambda self, other: add(other, mul(self, -1.0))
    __matmul__ = lambda self, other: matmul(self, other)
    __rmatmul__ = lambda self, other: matmul(other, self)
    __pow__ = lambda self, p: power(self, p)
    __array_ufunc__ = None     # `array @ Tiny`: NumPy hands over to Tiny.__rmatmul__


def lift(x):
    return x if isinstance(x, Tiny) else Tiny(x)


def node(value, inputs, vjps):
    """A primitive's output; it records the inputs that need a gradient (while recording)."""
    keep = [(x, v) for x, v in zip(inputs, vjps) if x.requires_grad]
    if not (RECORD[0] and keep):
        return Tiny(value)
    return Tiny(value, tuple(x for x, _ in keep), tuple(v for _, v in keep))


def unbroadcast(g, shape):
    """Sum the cotangent `g` over the axes broadcasting added or stretched, back to `shape`."""
    # BEGIN SOLUTION ex1_8
    while g.ndim > len(shape):
        g = tsum(g, axis=0)                          # a leading axis broadcasting added
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = tsum(g, axis=axis, keepdims=True)    # a size-1 axis broadcasting stretched
    return g
    # END SOLUTION ex1_8


def add(x, y):
    x, y = lift(x), lift(y)
    return node(x.value + y.value, (x, y),
                (lambda g: unbroadcast(g, x.shape), lambda g: unbroadcast(g, y.shape)))


def mul(x, y):
    x, y = lift(x), lift(y)
    # BEGIN SOLUTION ex1_6
    return node(x.value * y.value, (x, y), (lambda g: unbroadcast(g * y, x.shape),
                                            lambda g: unbroadcast(g * x, y.shape)))
    # END SOLUTION ex1_6


def matmul(x, y):                                    # 2-D @ 2-D
    x, y = lift(x), lift(y)
    # BEGIN SOLUTION ex1_7
    return node(x.value @ y.value, (x, y), (lambda g: g @ y.T, lambda g: x.T @ g))
    # END SOLUTION ex1_7


def transpose(x):
    return node(x.value.T, (x,), (lambda g: transpose(g),))


def tanh(x):
    out = node(np.tanh(x.value), (x,), (lambda g: g * (1.0 - out * out),))
    return out


def exp(x):
    out = node(np.exp(x.value), (x,), (lambda g: g * out,))
    return out


def power(x, p):                                     # p: a constant number
    return node(x.value ** p, (x,), (lambda g: g * (p * x ** (p - 1)),))


def reshape(x, shape):
    return node(x.value.reshape(shape), (x,), (lambda g: reshape(g, x.shape),))


def broadcast_to(x, shape):
    return node(np.broadcast_to(x.value, shape), (x,), (lambda g: unbroadcast(g, x.shape),))


def tsum(x, axis=None, keepdims=False):
    kept = np.sum(x.value, axis=axis, keepdims=True).shape     # reduced axes kept as 1s
    return node(np.sum(x.value, axis=axis, keepdims=keepdims), (x,),
                (lambda g: broadcast_to(reshape(g, kept), x.shape),))


def tlog(x):
    """Natural logarithm, forward and VJP (exercise ex1_1; the chapter does not use it)."""
    # BEGIN SOLUTION ex1_1
    return node(np.log(x.value), (x,), (lambda g: g * power(x, -1.0),))
    # END SOLUTION ex1_1


def toposort(root):
    """Every node `root` depends on, each after all of its parents (inputs first)."""
    # BEGIN SOLUTION ex1_9
    order, seen = [], set()

    def visit(v):
        if id(v) not in seen:
            seen.add(id(v))
            for p in v.parents:
                visit(p)
            order.append(v)
    visit(root)
    return order
    # END SOLUTION ex1_9


def gradients(out, inputs, create_graph=False):
    """d out / d inputs for a one-element `out`, by one reverse sweep over the graph."""
    saved, RECORD[0] = RECORD[0], create_graph
    try:
        # BEGIN SOLUTION ex1_10
        grads = {id(out): Tiny(np.ones_like(out.value))}
        for v in reversed(toposort(out)):            # outputs first: each g is complete here
            g = grads.get(id(v))
            for parent, vjp in zip(v.parents, v.vjps):
                gp = vjp(g)
                grads[id(parent)] = gp if id(parent) not in grads else grads[id(parent)] + gp
        # END SOLUTION ex1_10
    finally:
        RECORD[0] = saved
    return [grads.get(id(x), Tiny(np.zeros_like(x.value))) for x in inputs]


# %% [markdown]
# That is a complete engine (about 100 lines with its eleven primitives). We check it
# against `nf.Tensor` on an expression that broadcasts twice: `b` of shape `(4,)` over
# the rows, `c` of shape `(5, 1)` over the columns.
#
# $$L = \sum_{ij} \tanh\big((XW + b)_{ij}\big)^2\, e^{c_i}, \qquad
#   X: (5, 3),\ W: (3, 4),\ b: (4,),\ c: (5, 1).$$

# %%
X = rng.standard_normal((5, 3))
W0, b0, c0 = rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal((5, 1))


def loss_of(tanh_, exp_, sum_, W, b, c):     # the same expression for both engines
    return sum_(tanh_(X @ W + b) ** 2 * exp_(c))


W, b, c = (Tiny(v, requires_grad=True) for v in (W0, b0, c0))
mine = gradients(loss_of(tanh, exp, tsum, W, b, c), [W, b, c])
Wt, bt, ct = (nf.Tensor(v, requires_grad=True) for v in (W0, b0, c0))
theirs = nf.gradients(loss_of(nf.tanh, nf.exp, nf.sum, Wt, bt, ct), [Wt, bt, ct])
for name, m, t in zip("Wbc", mine, theirs):
    print(f"dL/d{name}: shape {m.shape}, "
          f"max |Tiny - nf.Tensor| = {np.abs(m.value - t.data).max():.1e}")
check("ch01.unbroadcast", [m.shape for m in mine] == [(3, 4), (4,), (5, 1)],
      "each cotangent has its input's shape after broadcasting is undone")
check("ch01.tiny_first_order",
      all(np.allclose(m.value, t.data, rtol=1e-12, atol=1e-14) for m, t in zip(mine, theirs)),
      "Tiny's dL/dW, dL/db, dL/dc equal nf.Tensor's to rtol 1e-12")

# %% [markdown]
# **Second order.** With `create_graph=True` the sweep above records its own
# operations, so $\nabla_W L$ is a `Tiny` with a graph. Differentiating
# $\langle \nabla_W L, V\rangle$ for a direction $V$ gives a Hessian–vector product
# $H V$ (and the mixed second derivatives with respect to $b$ and $c$) without ever
# forming the Hessian.

# %%
V = rng.standard_normal((3, 4))
W, b, c = (Tiny(v, requires_grad=True) for v in (W0, b0, c0))
gW, = gradients(loss_of(tanh, exp, tsum, W, b, c), [W], create_graph=True)
mine2 = gradients(tsum(gW * V), [W, b, c])
gWt = nf.gradients(loss_of(nf.tanh, nf.exp, nf.sum, Wt, bt, ct), Wt, create_graph=True)
theirs2 = nf.gradients(nf.sum(gWt * V), [Wt, bt, ct])
print("Hessian-vector product, max |Tiny - nf.Tensor|:",
      ", ".join(f"{np.abs(m.value - t.data).max():.1e}" for m, t in zip(mine2, theirs2)))
check("ch01.tiny_second_order",
      all(np.allclose(m.value, t.data, rtol=1e-10, atol=1e-12) for m, t in zip(mine2, theirs2)),
      "d<grad_W L, V>/d(W, b, c) equal nf.Tensor's to rtol 1e-10")

# %% [markdown]
# ## 3. The library's Tensor, and adding a primitive
#
# `nf.Tensor` is the same design, complete: ~40 primitives in a table
# (`nodeform/autodiff/vjps.py`), each row the forward code beside its VJPs, e.g.
#
# ```python
# mul = defprim("mul", lambda x, y: x * y,
#               lambda g, ans, x, y: unbroadcast(g * y, shape(x)),
#               lambda g, ans, x, y: unbroadcast(g * x, shape(y)))
# ```
#
# You can add your own with `nf.defprim(name, forward, vjp_0, vjp_1, ...)`. Running
# the cell again replaces the primitive (same name, same place), so a notebook can be
# re-run. Here `sinh`, with its VJP written in Tensor operations so that its second
# derivative works too:

# %%
def _sinh(x):
    return np.sinh(x)


sinh = nf.defprim("ch01_sinh", _sinh, lambda g, ans, x: g * (nf.exp(x) + nf.exp(-x)) * 0.5)
report = nf.gradcheck(lambda x: sinh(x), np.linspace(-2, 2, 5), order=2)
print(report)
check("ch01.defprim_sinh", report.ok, "gradcheck of the new primitive, first and second order")

# %% [markdown]
# ## 4. The VJP as a function: `nf.vjp`
#
# The adjoint method calls $\mathbf a^\top \partial f/\partial \mathbf z$ and
# $\mathbf a^\top \partial f/\partial\theta$ once per solver stage. `nf.vjp` returns
# the output and a function that maps any cotangent to those products, without ever
# forming a Jacobian. We check it against the explicit Jacobian of this small $f$.

# %%
A = rng.standard_normal((3, 3))
f = lambda z, theta: nf.tanh(z @ A.T) * theta          # f: R^3 x R^3 -> R^3  # noqa: E731
z0, theta0, a = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3)
out, vjp_fn = nf.vjp(f, z0, theta0)
a_dfdz, a_dfdtheta = vjp_fn(a)
J_z = numerical_jacobian(lambda z: np.tanh(z @ A.T) * theta0, z0)       # (3, 3)
print("a^T df/dz by VJP:      ", np.round(a_dfdz, 6))
print("a^T df/dz by Jacobian: ", np.round(a @ J_z, 6))
check("ch01.vjp_equals_jacobian", np.allclose(a_dfdz, a @ J_z, atol=1e-8),
      "a^T df/dz by nf.vjp equals a^T J with J by central differences, to 1e-8")

# %% [markdown]
# ## 5. Proving gradients: finite differences and their error
#
# A central difference $\big(s(x+\epsilon) - s(x-\epsilon)\big)/2\epsilon$ has a
# truncation error $\tfrac{\epsilon^2}{6}|s'''(x)|$ and a round-off error of about
# $u\,|s(x)|/\epsilon$, where $u = 2^{-53} \approx 1.1\times10^{-16}$ is float64's
# unit round-off (half of NumPy's `finfo(float).eps` $= 2.2\times 10^{-16}$, the
# spacing of floats at 1). The total is V-shaped in $\epsilon$, smallest at
# $\epsilon^* = (3u|s|/|s'''|)^{1/3}$, about $10^{-5}$ here, which is why
# `nf.gradcheck` uses $\epsilon = 10^{-6}$ and why float32 ($u \approx 6\times
# 10^{-8}$) is too coarse to check anything tightly. The guide lines below use the
# exact $s'''(x)$, itself computed by differentiating three times.

# %%
x0 = 0.7
s = lambda x: np.tanh(x) * np.exp(x)                       # noqa: E731
xt = nf.Tensor(x0, requires_grad=True)
d1 = nf.gradients(nf.tanh(xt) * nf.exp(xt), xt, create_graph=True)
d2 = nf.gradients(d1, xt, create_graph=True)
d3 = nf.gradients(d2, xt)
ds_exact, s3 = d1.item(), d3.item()
u = np.finfo(np.float64).eps / 2                            # unit round-off 2^-53
epsilons = np.logspace(-14, -1, 27 if QUICK else 105)
errors = {}
for dtype in (np.float64, np.float32):
    x = dtype(x0)
    central = [float((s(x + dtype(e)) - s(x - dtype(e))) / (2 * dtype(e))) for e in epsilons]
    errors[dtype.__name__] = np.abs(np.array(central) - ds_exact) + 1e-18
best = epsilons[int(np.argmin(errors["float64"]))]
eps_star = (3 * u * abs(s(x0)) / abs(s3)) ** (1 / 3)
trunc = epsilons ** 2 / 6 * abs(s3)
print(f"s'''(0.7) = {s3:.4f}; float64: best eps = {best:.1e} (theory {eps_star:.1e}), "
      f"error there {errors['float64'].min():.1e}")

fig, ax = plt.subplots(figsize=(6, 4))
for name, errs in errors.items():
    ax.loglog(epsilons, errs, ".-", label=f"measured, {name}")
ax.loglog(epsilons, trunc, "k--", lw=0.8, label=r"truncation $\epsilon^2|s'''|/6$")
ax.loglog(epsilons, u * abs(s(x0)) / epsilons, "k:", lw=0.8,
          label=r"round-off $u|s|/\epsilon$ (float64)")
ax.set_xlabel(r"step $\epsilon$")
ax.set_ylabel("|central difference − exact derivative|")
ax.set_title(r"Finite-difference error of $\frac{d}{dx}\tanh(x)e^x$ at $x=0.7$")
ax.set_ylim(1e-13, 1e1)
ax.legend(fontsize=8)
savefig(fig, "ch01_fd_error")
big = epsilons >= 1e-3                                      # truncation dominates here
ratio = errors["float64"][big] / trunc[big]
check("ch01.fd_guide_lines", np.all(np.abs(ratio - 1) < 0.1) and 0.1 < best / eps_star < 10,
      f"truncation line within 10% of the data for eps >= 1e-3 (ratio {ratio.min():.3f}.."
      f"{ratio.max():.3f}); best eps within 10x of (3u|s|/|s'''|)^(1/3)")

# %% [markdown]
# `nf.gradcheck(fun, *inputs)` turns this into a tool. It compares the reverse-mode
# gradient of $s(x) = \langle v, \text{fun}(x)\rangle$ (random $v$) entry by entry with
# central differences on small inputs, and on big inputs runs the **dot-product
# test**: for random directions $u$, $\langle \nabla s, u\rangle$ against
# $(s(x+\epsilon u) - s(x-\epsilon u))/2\epsilon$. Use it on your own models.

# %%
W1 = rng.standard_normal((2, 16)) * 0.5
result = nf.gradcheck(lambda W, X: nf.softplus(X @ W).sum(axis=1), W1, rng.standard_normal((8, 2)))
print(result)

print("\n--- EXPECTED FAILURE, shown on purpose: a VJP that forgot the factor 2 of d(x^2)/dx ---")
wrong = nf.autodiff.Primitive("wrong_square", lambda x: x * x, (lambda g, ans, x: g * x,))
report = nf.gradcheck(lambda x: wrong(x), np.array([1.0, 2.0]))
print(report)
print("--- end of the expected failure ---")
check("ch01.gradcheck", result.ok and not report.ok,
      "a right gradient passes and a wrong VJP is caught")

# %% [markdown]
# ## 6. Gradients of gradients, and why the paper needs them
#
# Section 2 built them into `Tiny`; `nf.Tensor` does the same. Where the paper needs
# them: the continuous normalizing flow (Sec. 4) integrates
# $-\operatorname{tr}(\partial f/\partial z)$. Each diagonal entry
# $\partial f_i/\partial z_i$ is a *first* derivative (one VJP with the unit vector
# $e_i$ gives row $i$ of the Jacobian); but training needs the gradient of that trace
# with respect to $\theta$, the derivative of a derivative. So the VJPs that produce the
# trace must themselves be recorded and differentiated: second order.

# %%
t = nf.Tensor(np.linspace(-2, 2, 5), requires_grad=True)
d1 = nf.gradients(nf.tanh(t).sum(), t, create_graph=True)    # 1 - tanh^2
d2 = nf.gradients(d1.sum(), t)                                # -2 tanh (1 - tanh^2)
expected = -2 * np.tanh(t.data) * (1 - np.tanh(t.data) ** 2)
print("d2/dx2 tanh:", np.round(d2.data, 6))
# the same second derivative with the engine of section 2
tt = Tiny(np.linspace(-2, 2, 5), requires_grad=True)
g1, = gradients(tsum(tanh(tt)), [tt], create_graph=True)
g2, = gradients(tsum(g1), [tt])
report2 = nf.gradcheck(nf.softplus, np.linspace(-3, 3, 7), order=2)
print(report2)
check("ch01.second_order_tanh",
      np.allclose(d2.data, expected, rtol=1e-13, atol=1e-15)
      and np.allclose(g2.value, expected, rtol=1e-13, atol=1e-15) and report2.ok,
      "nf.Tensor and Tiny both give tanh'' = -2 tanh (1 - tanh^2) to 1e-13")

# %% [markdown]
# ## Summary
#
# * Reverse mode computes vector–Jacobian products by running each primitive's VJP
#   from the output back to the inputs, in reverse topological order; cotangents that
#   meet are summed, broadcasting is undone by summing (`unbroadcast`).
# * You built it: `Tiny` with eleven primitives equals `nf.Tensor` to 1e-12 (first
#   order) and 1e-10 (Hessian–vector products).
# * The adjoint method needs only VJPs: $\mathbf a^\top\partial f/\partial z$ and
#   $\mathbf a^\top\partial f/\partial\theta$ cost about one evaluation of $f$ each.
# * Central differences reach about $10^{-10}$ in float64 at
#   $\epsilon\approx10^{-5}$; the error is V-shaped in $\epsilon$, truncation
#   $\epsilon^2|s'''|/6$ on the right, round-off $u|s|/\epsilon$ on the left.
# * VJPs written with Tensor ops make gradients of gradients free.
#
# ## Exercises
#
# Code exercises sit between `# BEGIN SOLUTION exN_M` and `# END SOLUTION exN_M` in the
# built code above (or in the library where named); in a student copy
# (`python -m nodeform classroom make DIR`) each is a `raise NotImplementedError(...)`
# with a hint. Check one with `python -m nodeform classroom check ex1_8`, all with
# `python -m nodeform classroom grade`. Suggested order: ex1_8, ex1_6, ex1_7, ex1_9,
# ex1_10, then the rest. Open exercises (measure, explain) have no automatic check.
#
# | id | level | what | where |
# |---|---|---|---|
# | ex1_1 | ★ | `tlog`: the log primitive of `Tiny`, forward and VJP | `tlog`, section 2 |
# | ex1_2 | ★ | `Scalar.__pow__` for a constant exponent (checked against `nf.gradients` on $\exp(a^3 b)$) | `Scalar`, section 1 |
# | ex1_3 | ★ | *open:* the float32 optimum of $\epsilon$ (below) | section 5 |
# | ex1_4 | ★★ | *open:* how many directions the dot-product test needs (below) | section 5 |
# | ex1_5 | ★ | *open:* why `logsumexp` needs the max trick (below) | `nodeform/autodiff/vjps.py` |
# | ex1_6 | ★ | `mul` and its two VJPs, with `unbroadcast` | `mul`, section 2 |
# | ex1_7 | ★ | `matmul` (2-D) and its two VJPs | `matmul`, section 2 |
# | ex1_8 | ★★ | `unbroadcast`: sum a cotangent back to an input's shape | `unbroadcast`, section 2 |
# | ex1_9 | ★★ | `toposort`: every node after its parents | `toposort`, section 2 |
# | ex1_10 | ★★★ | `gradients`: the reverse sweep, accumulation, `create_graph` | `gradients`, section 2 |
# | ex1_11 | ★ | the library's VJP of `elu` (then `pytest tests/test_autodiff_primitives.py -k elu` passes too) | `_elu_vjp` in `nodeform/autodiff/vjps.py` |
#
# **ex1_3.** Read the $\epsilon$ that minimizes the float32 curve of the figure and
# compare it with $(3u_{32}\lvert s\rvert/\lvert s'''\rvert)^{1/3}$, $u_{32} = 2^{-24}$.
# Why is the smallest float32 error so much larger than float64's?
#
# **ex1_4.** Let a VJP be wrong by a fixed vector: it returns $\nabla s + \delta$,
# $\delta \ne 0$, $x \in \mathbb R^n$. One direction $u \sim \mathcal N(0, I_n)$ of the
# dot-product test compares $\langle \nabla s + \delta, u\rangle$ with a central difference
# $\approx \langle \nabla s, u\rangle$ and passes when
# $\lvert\langle \delta, u\rangle\rvert \le \tau$ (its tolerance). (a) Show that
# $\langle\delta, u\rangle \sim \mathcal N(0, \lVert\delta\rVert^2)$, so the wrong VJP
# passes one direction with probability $p = P(\lvert Z\rvert \le \tau/\lVert\delta\rVert)
# \approx \sqrt{2/\pi}\,\tau/\lVert\delta\rVert$ when $\tau \ll \lVert\delta\rVert$, and $k$
# independent directions with probability $p^k$. (b) For $\lVert\delta\rVert = 10\tau$,
# how many directions make a miss less likely than $10^{-6}$? (c) Check (a) by
# experiment: an `nf.autodiff.Primitive` on $x\in\mathbb R^{200}$ whose VJP adds a fixed
# $\delta$, and `nf.gradcheck(..., mode="dot", n_directions=1, seed=k)` for 200 seeds;
# compare the fraction of misses with $p$ (a direction's tolerance is
# `atol + rtol * |numeric|`).
#
# **ex1_5.** Write `logsumexp` naively as `log(sum(exp(x)))` with `nf` operations and
# evaluate it and its gradient at `x = [1000, 1000]`. What goes wrong, and how does the
# library's `logsumexp` in `nodeform/autodiff/vjps.py` avoid it (forward and VJP)?
