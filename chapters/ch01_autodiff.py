# %% [markdown]
# # Chapter 1 — Reverse-mode automatic differentiation
#
# **Goal.** Build the machine that every later chapter stands on: reverse-mode
# automatic differentiation over arrays, and a way to *prove* each gradient right.
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
# Prerequisites: NumPy. Modules used: `nodeform.Tensor`, `nodeform.gradcheck`,
# `nodeform.grad`, `nodeform.vjp`.

# %%
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

import nodeform as nf
from nodeform.plotting import is_quick, savefig
from nodeform.testing import numerical_jacobian

QUICK = is_quick()
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Reverse mode in thirty lines
#
# A program is a chain of primitives $y = f_K(\dots f_2(f_1(x)))$. The chain rule
# read from the output end is
# $\bar x = J_1^\top(\dots J_K^\top \bar y)$: start from the cotangent
# $\bar y = \partial L/\partial y$, and let each primitive turn the cotangent of its
# output into cotangents of its inputs. That is all a primitive must know: its
# forward code and its VJP. Here is the whole idea on scalars, micrograd style,
# before we look at the array version in `nodeform/autodiff/`.

# %%
class Scalar:
    """A number that remembers how it was made (teaching version of nf.Tensor)."""

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

# The same with nodeform's Tensor, which does this over whole arrays:
ta = nf.Tensor(0.5, requires_grad=True)
tb = nf.Tensor(-1.5, requires_grad=True)
nf.tanh(ta * tb + ta).backward()
print(f"nodeform:      dy/da = {ta.grad.item():.6f}, dy/db = {tb.grad.item():.6f}")
assert np.isclose(a.grad, ta.grad.item()) and np.isclose(b.grad, tb.grad.item())

# %% [markdown]
# ## 2. Arrays, broadcasting, and the derivative table
#
# On arrays, a primitive's VJP must also undo broadcasting: if `b` of shape `(4,)`
# was added to `x` of shape `(3, 4)`, it was used three times, so its cotangent is
# the sum of the three rows. nodeform's table (`nodeform/autodiff/vjps.py`) writes
# each primitive's forward code and VJPs side by side, e.g.
#
# ```python
# mul = defprim("mul", lambda x, y: x * y,
#               lambda g, ans, x, y: unbroadcast(g * y, shape(x)),
#               lambda g, ans, x, y: unbroadcast(g * x, shape(y)))
# tanh = defprim("tanh", lambda x: xp.tanh(x), lambda g, ans, x: g * (1.0 - ans * ans))
# ```
#
# A one-hidden-layer network and its gradient:

# %%
X = rng.standard_normal((8, 2))                                     # (batch, in)
W1 = nf.Tensor(rng.standard_normal((2, 16)) * 0.5, requires_grad=True)  # (in, hidden)
b1 = nf.Tensor(np.zeros(16), requires_grad=True)                    # broadcast over batch
W2 = nf.Tensor(rng.standard_normal((16, 1)) * 0.5, requires_grad=True)
loss = ((nf.tanh(X @ W1 + b1) @ W2) ** 2.0).mean()
loss.backward()
print(f"loss = {loss.item():.5f}; |dL/dW1| = {np.linalg.norm(W1.grad.data):.5f}, "
      f"dL/db1 has shape {b1.grad.shape}")

# %% [markdown]
# ## 3. The VJP as a function: `nf.vjp`
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
assert np.allclose(a_dfdz, a @ J_z, atol=1e-8)

# %% [markdown]
# ## 4. Proving gradients: finite differences and their error
#
# A central difference $\big(s(x+\epsilon) - s(x-\epsilon)\big)/2\epsilon$ has a
# truncation error $\tfrac{\epsilon^2}{6}s'''(x)$ and a round-off error of about
# $u\,|s(x)|/\epsilon$ with $u \approx 1.1\times10^{-16}$ in float64. The total is
# V-shaped in $\epsilon$, smallest near $\epsilon \approx u^{1/3} \approx 10^{-5.3}$
# — which is why `nf.gradcheck` uses $\epsilon = 10^{-6}$ and why float32
# (with $u \approx 6\times 10^{-8}$) is too coarse to check anything tightly.

# %%
x0 = 0.7
s = lambda x: np.tanh(x) * np.exp(x)                       # noqa: E731
ds_exact = nf.grad(lambda t: nf.tanh(t) * nf.exp(t))(x0)
epsilons = np.logspace(-14, -1, 27 if QUICK else 105)
errors = {}
for dtype in (np.float64, np.float32):
    x = dtype(x0)
    errors[dtype.__name__] = [abs(float((s(x + dtype(e)) - s(x - dtype(e))) / (2 * dtype(e)))
                                  - ds_exact) + 1e-18 for e in epsilons]
best = epsilons[int(np.argmin(errors["float64"]))]
print(f"float64: best eps = {best:.1e} (theory: about {np.finfo(float).eps ** (1/3):.1e}), "
      f"error there {min(errors['float64']):.1e}")

fig, ax = plt.subplots(figsize=(6, 4))
for name, errs in errors.items():
    ax.loglog(epsilons, errs, ".-", label=name)
ax.loglog(epsilons, epsilons ** 2 / 6 * 2.0, "k--", lw=0.8, label=r"truncation $\propto\epsilon^2$")
ax.loglog(epsilons, 1.1e-16 / epsilons, "k:", lw=0.8, label=r"round-off $\propto u/\epsilon$")
ax.set_xlabel(r"step $\epsilon$")
ax.set_ylabel("|central difference − exact derivative|")
ax.set_title(r"Finite-difference error of $\frac{d}{dx}\tanh(x)e^x$ at $x=0.7$")
ax.set_ylim(1e-13, 1e1)
ax.legend()
savefig(fig, "ch01_fd_error")

# %% [markdown]
# `nf.gradcheck(fun, *inputs)` turns this into a tool. It compares the reverse-mode
# gradient of $s(x) = \langle v, \text{fun}(x)\rangle$ (random $v$) entry by entry with
# central differences on small inputs, and on big inputs runs the **dot-product
# test**: for random directions $u$, $\langle \nabla s, u\rangle$ against
# $(s(x+\epsilon u) - s(x-\epsilon u))/2\epsilon$. Use it on your own models.

# %%
result = nf.gradcheck(lambda W, X: nf.softplus(X @ W).sum(axis=1), W1.data, X)
print(result)
assert result.ok

# A wrong VJP is caught, and the report names where:
wrong = nf.autodiff.Primitive("wrong_square", lambda x: x * x, (lambda g, ans, x: g * x,))
report = nf.gradcheck(lambda x: wrong(x), np.array([1.0, 2.0]))
print(report)
assert not report.ok

# %% [markdown]
# ## 5. Gradients of gradients
#
# Each VJP is itself written with Tensor operations, so with `create_graph=True`
# the backward pass is recorded and can be differentiated again. Chapter 6 needs
# this: the continuous normalizing flow integrates $-\operatorname{tr}(\partial f/\partial z)$,
# and each diagonal entry is a derivative of a derivative.

# %%
t = nf.Tensor(np.linspace(-2, 2, 5), requires_grad=True)
d1 = nf.gradients(nf.tanh(t).sum(), t, create_graph=True)    # 1 - tanh^2
d2 = nf.gradients(d1.sum(), t)                                # -2 tanh (1 - tanh^2)
expected = -2 * np.tanh(t.data) * (1 - np.tanh(t.data) ** 2)
print("d2/dx2 tanh:", np.round(d2.data, 6))
assert np.allclose(d2.data, expected)
print(nf.gradcheck(nf.softplus, np.linspace(-3, 3, 7), order=2))

# %% [markdown]
# ## Summary
#
# * Reverse mode computes vector–Jacobian products by running each primitive's VJP
#   from the output back to the inputs, in topological order; cotangents that meet
#   are summed, broadcasting is undone by summing.
# * The adjoint method needs only VJPs: $\mathbf a^\top\partial f/\partial z$ and
#   $\mathbf a^\top\partial f/\partial\theta$ cost about one evaluation of $f$ each.
# * Central differences are accurate to about $10^{-10}$ in float64 at
#   $\epsilon\approx10^{-6}$; the error is V-shaped in $\epsilon$. `nf.gradcheck`
#   uses them elementwise on small inputs and as a dot-product test on big ones.
# * VJPs written with Tensor ops make gradients of gradients free.
#
# ## Exercises
#
# 1. **ex1_1** Add `sinh` as a primitive with `nf.defprim` and check it with
#    `nf.gradcheck(..., order=2)`.
# 2. **ex1_2** Extend the `Scalar` class above with `__pow__` and `exp`, and check it
#    against `nf.grad` on $\exp(a^3 b)$.
# 3. **ex1_3** Find the $\epsilon$ minimizing the float32 error in the figure. How
#    does it compare with $u_{32}^{1/3}$?
# 4. **ex1_4** The dot-product test checks one scalar per direction. Show that a VJP
#    returning $2\times$ the right answer is caught with probability 1, but a VJP that
#    is wrong only in a direction orthogonal to all tested $u$ is not. How many
#    directions make a miss unlikely?
# 5. **ex1_5** Write `logsumexp` naively as `log(sum(exp(x)))` and evaluate it and its
#    gradient at `x = [1000, 1000]`. What goes wrong, and how does the stable version
#    in `vjps.py` avoid it?
