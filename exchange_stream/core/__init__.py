"""The pure core: values and rules with no I/O, no clock and no Twisted.

The client op codec (``wire``), channel names, the local fan-out index (``hub``), the
CONNMIX publish codec (``mesh_api``), settings (``config``) and the market computations
(``market``). Everything here is a plain function or class that a test can call directly;
the layers above hand it bytes and times and put its answers on the network.
"""
