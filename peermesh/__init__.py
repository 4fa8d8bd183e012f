"""peermesh: a service mesh with no central control plane."""

__version__ = "0.1.0"
