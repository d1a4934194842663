"""Balancing methods: loss weightings and gradient aggregators behind one registry and interface."""

from mtlkit.balancing._base import BALANCERS, Balancer, Equal, Fixed, Losses, WeightedSum, get

__all__ = ["BALANCERS", "Balancer", "Equal", "Fixed", "Losses", "WeightedSum", "get"]
