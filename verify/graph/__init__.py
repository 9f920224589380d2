"""Bounds on a DAG of torch ops (CROWN / alpha-CROWN through convolutions and residual adds)."""
from .bounded import BoundedGraph, GraphBounds, InputBox
from .ir import Graph, Node
from .trace import UnsupportedGraphOpError, from_module

__all__ = ["BoundedGraph", "GraphBounds", "InputBox", "Graph", "Node", "UnsupportedGraphOpError", "from_module"]
