"""The paper's experiments as runnable trainings, one module each (``python -m nodeform train ...``).

* ``table1``  the four MNIST models of Table 1 (chapter 4)

Nothing is built or loaded at import time.
"""
