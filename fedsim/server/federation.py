"""The federation the server runs: which node holds which party, and the strategy.

:func:`discover_partitions` maps parties to nodes; :func:`build_strategy` builds the
algorithm's server half from the registry, composed with what the rest of the config
adds to its round (in this order: the simulated clock, ``fedsim/system/run.py``, the
compressor's decoder, ``fedsim/comm/server.py``, its compressed broadcast,
``fedsim/comm/downlink.py``, an attack's model poisoning and a
defence, ``fedsim/inputs/adversary.py``, then differential privacy,
``fedsim/privacy/run.py``, and last the asynchronous loop's state,
``fedsim/asynchronous/loop.py``) and bound to how it samples and screens.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

import partitioners
import strategies
from fedsim.asynchronous.loop import async_for
from fedsim.comm.downlink import broadcast_for
from fedsim.comm.server import UpdateDecoder
from fedsim.comm.update import update_codec
from fedsim.inputs.adversary import server_rules
from fedsim.inputs.run_inputs import Experiment
from fedsim.privacy.run import PrivacyRun
from fedsim.rundir.store import check_client_writes
from fedsim.system.run import clock_for
from strategies.strategy import FederationSetup, FedsimStrategy


def discover_partitions(grid: Grid, n_parties: int, timeout: float = 600.0) -> Mapping[int, int]:
    """party id -> node id.

    The local engine knows its mapping; on Flower's runtimes node ids are opaque,
    so every node is asked once (a ``query`` message) which partition it holds.
    """
    mapping = getattr(grid, "node_of_party", None)
    if mapping is not None:
        return mapping
    deadline = time.time() + timeout
    while len(list(grid.get_node_ids())) < n_parties and time.time() < deadline:
        time.sleep(0.2)
    node_ids = list(grid.get_node_ids())
    msgs = [
        Message(
            RecordDict({"config": ConfigRecord({"ask": "partition-id"})}), dst_node_id=n, message_type=MessageType.QUERY
        )
        for n in node_ids
    ]
    replies = grid.send_and_receive(msgs, timeout=timeout)
    out: dict[int, int] = {}
    for r in replies:
        if r.has_content():
            pid = int(r.content["metrics"]["partition-id"])
            out[pid] = r.metadata.src_node_id
    if len(out) != n_parties:
        raise RuntimeError(f"found {len(out)} of {n_parties} partitions among {len(node_ids)} nodes")
    return out


def federation_setup(
    exp: Experiment, node_of_party: Mapping[int, int], model: torch.nn.Module, device: torch.device
) -> FederationSetup:
    """How the strategy samples, screens and aggregates in this run."""
    cfg, f = exp.cfg, exp.cfg.federation
    return FederationSetup(
        seed=cfg.seed,
        node_of_party=node_of_party,
        fraction_fit=f.fraction_fit,
        fraction_evaluate=f.fraction_evaluate,
        min_fit_clients=f.min_fit_clients,
        max_failure_fraction=f.max_failure_fraction,
        param_keys=frozenset(n for n, p in model.named_parameters() if p.requires_grad),
        device=str(device),
        holdout=frozenset(exp.holdout),
        # a full disk is the run's failure, not the clients'
        check_failures=check_client_writes,
        # one sample and data.val_fraction: nothing to validate on (preflight said so)
        selection=cfg.selection,
        party_sizes=train_sizes(partitioners.party_sizes(exp.dataidxs), cfg.data.val_fraction),
        no_validation=(
            frozenset(np.flatnonzero(partitioners.party_sizes(exp.dataidxs) <= 1).tolist())
            if cfg.data.val_fraction > 0
            else frozenset()
        ),
    )


def build_strategy(
    grid: Grid, exp: Experiment, model: torch.nn.Module, device: torch.device, privacy: PrivacyRun | None
) -> FedsimStrategy:
    """The run's strategy: the algorithm with the hyperparameters as the run uses them
    (a robust aggregator's f from the attack), composed with the attack's and the
    defence's rules and privacy, in that order, and bound to the run's federation on
    ``grid``'s nodes (``model``: the run's network, whose trainable entries it averages)."""
    params, _ = strategies.resolve(exp.cfg)
    codec = update_codec(exp.cfg.comm, [n for n, _ in model.named_parameters()])
    decoder = (UpdateDecoder(codec),) if codec is not None else ()
    # the clock first: which replies arrive in time (their bytes the compressed payload's)
    # is decided before anything acts on them; then the decoder rebuilds the updates
    setup = federation_setup(exp, grid_parties(grid, exp), model, device)
    model_bytes = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    clocks = clock_for(exp.cfg, setup.party_sizes, model_bytes)
    # last: the asynchronous loop, an extension only for its checkpoint entry (the parties in flight)
    extensions = (
        *clocks,
        *decoder,
        # the compressed broadcast wraps the aggregate outermost: it encodes what the
        # algorithm (after client-level DP's noise: post-processing) made of the round
        *broadcast_for(exp.cfg, codec),
        *server_rules(exp.cfg),
        *((privacy,) if privacy is not None else ()),
        *async_for(exp.cfg, clocks),
    )
    strategy = strategies.build(params, extensions)
    strategy.bind(setup)
    return strategy


def grid_parties(grid: Grid, exp: Experiment) -> Mapping[int, int]:
    """party id -> node id of the run's federation on ``grid``."""
    return discover_partitions(grid, exp.cfg.partition.n_parties)


def train_sizes(sizes: np.ndarray, val_fraction: float) -> np.ndarray:
    """Each party's training samples: its samples less ``data.val_fraction`` of them held
    out for validation (``Experiment.split``: round(f n), at least 1 and at most n - 1)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if val_fraction <= 0:
        return sizes
    n_val = np.clip(np.round(val_fraction * sizes).astype(np.int64), 1, np.maximum(sizes - 1, 0))
    return np.where(sizes > 1, sizes - n_val, sizes)
