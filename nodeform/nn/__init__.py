"""Neural-network parts: modules, layers, convolution, normalization, losses, initializers.

Everything here is built from autodiff primitives (plus
the two convolution primitives of :mod:`nodeform.nn.conv`), so every layer can
be gradient-checked and differentiated twice.
"""
from nodeform.nn import init  # noqa: F401
from nodeform.nn.module import (Module, Parameter, Sequential, parameters_to_vector,  # noqa: F401
                                vector_to_parameters, unflatten, using_parameters)
from nodeform.nn.layers import (Linear, ConcatLinear, Flatten, GlobalAvgPool2d, Identity,  # noqa: F401
                                Lambda, Tanh, ReLU, Sigmoid, Softplus, ELU)
from nodeform.nn.conv import Conv2d, ConcatConv2d, conv2d, im2col, col2im  # noqa: F401
from nodeform.nn.norm import GroupNorm, group_norm  # noqa: F401
from nodeform.nn.rnn import RNNCell  # noqa: F401
from nodeform.nn.losses import (cross_entropy, accuracy, mse_loss, gaussian_nll,  # noqa: F401
                                kl_diag_gaussians)
from nodeform.nn.serialize import (save_arrays, load_arrays, save_module, load_module,  # noqa: F401
                                   CheckpointError)
