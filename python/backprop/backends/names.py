"""The names every backend knows: the activations, the losses, and the leaky ReLU's slope.

The bottom of the backends package: ``base`` (the protocol) and ``checks`` (its argument checks)
both read these, and this module imports nothing.
"""

ACTIVATIONS = ("tanh", "sigmoid", "relu", "leaky_relu", "identity")
LOSSES = ("sse", "mse", "cross_entropy", "bce")
LEAKY_SLOPE = 0.01
