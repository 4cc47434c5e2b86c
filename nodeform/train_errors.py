"""The errors the training loop raises when it stops on its own, each naming the step and what to do.

They live apart from :mod:`nodeform.train` so that :mod:`nodeform.checkpoint`
(which refuses to save non-finite parameters) can raise them too.
"""
from __future__ import annotations


class TrainingError(RuntimeError):
    """Training stopped because continuing would waste work or lose it; the message says why and what to do."""


class NonFiniteLossError(TrainingError):
    """The loss of a step was NaN or infinite; that step did not change the parameters.

    Attributes
    ----------
    step : int
        The step (counting from 1) whose loss was not finite.
    value : float
        The loss.
    """

    def __init__(self, message, step, value):
        super().__init__(message)
        self.step, self.value = step, value


class NonFiniteParameterError(TrainingError):
    """Some parameters are NaN or infinite, so they were not checkpointed.

    Attributes
    ----------
    step : int
        The step after which they were found.
    names : list of str
        The parameters (and buffers) holding non-finite values.
    """

    def __init__(self, message, step, names):
        super().__init__(message)
        self.step, self.names = step, list(names)
