"""Misclassification networks: one directed graph per model, and their consensus across models.

Nodes are classes. A model's network keeps an edge true -> predicted only where that confusion is significant
for the model (see `miscause.jobs.analysis.patterns.causes.significant_edges`); weaker edges are pruned. Edge
attributes: `weight` (conditional probability P(pred = j | true = i, pred != i)), `count`, `p_value`, `p_adjusted`.
"""

from __future__ import annotations

import networkx as nx
import numpy as np


def misclassification_network(classes: tuple[str, ...], counts: np.ndarray, conditional: np.ndarray,
                              significant: np.ndarray, p_values: np.ndarray,
                              p_adjusted: np.ndarray) -> nx.DiGraph:
    """One model's network: every class a node, an edge for each significant confusion."""
    graph = nx.DiGraph()
    graph.add_nodes_from(classes)
    for i, j in zip(*np.nonzero(significant), strict=True):
        graph.add_edge(classes[i], classes[j], weight=float(conditional[i, j]), count=int(counts[i, j]),
                       p_value=float(p_values[i, j]), p_adjusted=float(p_adjusted[i, j]))
    return graph


def consensus_network(classes: tuple[str, ...], networks: dict[str, nx.DiGraph]) -> nx.DiGraph:
    """The union of the models' edges; `n_models` says how many have each edge, `models` which (comma-joined),
    `weight` is the mean conditional probability over those models."""
    graph = nx.DiGraph()
    graph.add_nodes_from(classes)
    for name, network in networks.items():
        for source, target, data in network.edges(data=True):
            if graph.has_edge(source, target):
                edge = graph.edges[source, target]
                edge["models"] += f",{name}"
                edge["n_models"] += 1
                edge["weight"] += data["weight"]
            else:
                graph.add_edge(source, target, models=name, n_models=1, weight=data["weight"])
    for _, _, data in graph.edges(data=True):
        data["weight"] /= data["n_models"]
    return graph


def network_json(graph: nx.DiGraph) -> dict:
    """A plain JSON form: {"nodes": [names], "edges": [{"source", "target", attributes...}]}."""
    return {
        "nodes": list(graph.nodes),
        "edges": [{"source": s, "target": t, **data} for s, t, data in graph.edges(data=True)],
    }
