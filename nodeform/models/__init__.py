"""The paper's models, one module per family (ARCHITECTURE.md §1.7).

* ``odenet``      ODE-Net, RK-Net, ResNet and the MLP of Table 1 (chapter 4)
* ``cnf``         continuous normalizing flows and the planar NF baseline (chapter 6)
* ``latent_ode``  the latent ODE, its RNN baselines and the Poisson process (chapter 7)

Import the module you need (``from nodeform.models import odenet``); nothing is
built at import time.
"""
