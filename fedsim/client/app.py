"""The Flower ClientApp: one party's local training and evaluation.

The app is a plain ``flwr.clientapp.ClientApp`` with ``@train``, ``@evaluate`` and
``@query`` functions. Per process it keeps one :class:`ClientRuntime` per run: the
dataset on the training device, the partition, and ONE model instance into which
each party's global weights are loaded (pfl-research's trick: no model per party).
What must outlive a round for a party (SCAFFOLD's c_i, MOON's previous model,
FedBN's BatchNorm layers) goes to the client-state store on disk.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

import strategies
from fedsim.client.dpsgd import train_dpsgd
from fedsim.client.training import (
    PartyData,
    TrainStats,
    evaluate,
    make_criterion,
    party_view,
    sample_losses,
    steps_per_epoch,
    train_local,
)
from fedsim.comm.update import state_with_residual, update_codec
from fedsim.data.transforms import to_float
from fedsim.inputs.adversary import poison_training_set
from fedsim.inputs.run_inputs import (
    Experiment,
    RunSettings,
    bounded_get,
    experiment_for,
    on_device,
    set_up_torch,
)
from fedsim.models import build_model, has_batchnorm
from fedsim.privacy.dpsgd import trains_with_dpsgd
from fedsim.privacy.mods import privacy_mod
from fedsim.privacy.run import SIGMA_KEY
from fedsim.rundir.store import ClientStateStore
from fedsim.schema.experiment import epoch_range
from fedsim.util.flower_compat import metric_record, record_dict
from fedsim.util.seeding import derive, seed_torch, torch_generator, uniform
from strategies.arrays import Packer, record_to_state, state_to_record
from strategies.rule import TrainContext
from strategies.strategy import GLOBAL_LOSS_KEY

log = logging.getLogger(__name__)

PARTITION_KEY = "partition-id"


#: the training images are kept normalised (float32) up to this size (MNIST's 60,000:
#: 188 MB), saving each step's conversion; larger sets stay uint8 and convert per batch
NORMALISED_MAX_BYTES = 256 * 2**20


class InjectedFault(RuntimeError):
    """A failure injected on purpose by ``engine.fault_rate``."""


@dataclass
class SharedContent:
    """What every party of a round receives: config, global weights, extra arrays."""

    config: dict[str, Any]
    server_round: int
    global_state: OrderedDict[str, torch.Tensor]  # decoded, on the CPU
    records: dict[str, OrderedDict[str, torch.Tensor]]  # e.g. SCAFFOLD's c, on the device
    # the model's own tensors in global_state's order, found after the round's first
    # load_state_dict (None: every party loads with load_state_dict)
    targets: list[torch.Tensor] | None = None
    # the in-process reply of the model's own tensors (strategies.arrays.Packer), made once a round
    packer: Packer | None = None


@dataclass
class PartyRound:
    """One party's round, prepared: the message, its plan and its random generator."""

    msg: Message
    party: int
    server_round: int
    fault: str | None
    t0: float
    ctx: TrainContext
    data: PartyData
    epochs: int
    max_steps: int | None
    gen: torch.Generator
    rule: Any
    #: F_k(w^t) when the server asks for it: the received model's loss on the party's data
    probe: dict[str, float] = field(default_factory=dict)


class ClientRuntime:
    """Everything a party needs, built once per process and run."""

    def __init__(self, exp: Experiment) -> None:
        self.exp = exp
        cfg = self.cfg = exp.cfg
        self.device = set_up_torch(cfg)
        bundle = exp.bundle
        self.x = on_device(bundle.x_train, self.device)
        self.y = on_device(bundle.y_train, self.device)
        # a data-poisoning attack's labels and triggers on the malicious parties' samples
        # (fedsim/inputs/adversary.py); every party of every engine indexes these tensors
        self.x, self.y = poison_training_set(cfg, exp.dataidxs, self.x, self.y, bundle.num_classes)
        if not bundle.augment and self.x.dtype == torch.uint8 and 4 * self.x.numel() <= NORMALISED_MAX_BYTES:
            # normalised once, not per batch (augmentation needs the raw images): the same
            # floats, elementwise (fedsim.data.transforms.to_float passes floats through)
            self.x = to_float(self.x, bundle.mean, bundle.std)
        seed_torch(derive(cfg.seed, "client-model"))
        self.model = build_model(cfg.model, bundle.input_shape, bundle.num_classes).to(self.device)
        self.has_bn = has_batchnorm(self.model)
        self.algo = strategies.get(cfg.strategy.name)
        self.store = ClientStateStore(exp.store.client_state)
        # comm.compressor's codec (None: the weights travel as they are)
        self.codec = update_codec(cfg.comm, [n for n, _ in self.model.named_parameters()])
        self.criterion = make_criterion(cfg.train)
        self.dpsgd = trains_with_dpsgd(cfg)  # a registry read: once, not per party
        self._parties: dict[int, tuple[PartyData, PartyData, torch.Tensor]] = {}
        self._shared_cache: tuple[RecordDict, SharedContent] | None = None

    def build_model(self) -> torch.nn.Module:
        b = self.exp.bundle
        return build_model(self.cfg.model, b.input_shape, b.num_classes).to(self.device)

    # ------------------------------------------------------------------ data
    def _party(self, party: int) -> tuple[PartyData, PartyData, torch.Tensor]:
        """The party's training and validation views and its training labels, made once
        and kept for up to 4,096 parties (index tensors are small; bound them anyway)."""
        hit = self._parties.get(party)
        if hit is None:
            tr, va = (torch.from_numpy(i).to(self.device) for i in self.exp.split(party))
            train = party_view(self.exp, self.x, self.y, tr, party, train=True)
            val = party_view(self.exp, self.x, self.y, va, party, train=False)
            hit = (train, val, self.y[tr])
            if len(self._parties) < 4096:
                self._parties[party] = hit
        return hit

    def party_indices(self, party: int) -> tuple[torch.Tensor, torch.Tensor]:
        train, val, _ = self._party(party)
        return train.indices, val.indices

    def train_labels(self, party: int) -> torch.Tensor:
        """The labels of the party's training samples (FedLC's counts)."""
        return self._party(party)[2]

    def party_data(self, party: int, val: bool = False) -> PartyData:
        return self._party(party)[1 if val else 0]

    # ------------------------------------------------------------ local work
    def local_plan(self, party: int, server_round: int, n_train: int) -> tuple[int, int | None]:
        """(epochs, max_steps) of this party in this round: system heterogeneity.

        ``train.epochs = [lo, hi]`` draws the epochs per party and round; a
        ``federation.straggler_fraction`` share of the cohort stops after a random
        part (uniform in (0, 1)) of its local steps.
        """
        cfg = self.cfg
        lo, hi = epoch_range(cfg.train.epochs)
        epochs = lo + int(uniform(cfg.seed, "epochs", server_round, party) * (hi - lo + 1)) if hi > lo else lo
        fraction = cfg.federation.straggler_fraction
        if fraction <= 0 or uniform(cfg.seed, "straggler", server_round, party) >= fraction:
            return epochs, None
        total = epochs * steps_per_epoch(n_train, cfg.train.batch_size, self.has_bn)
        return epochs, max(1, int(np.floor(uniform(cfg.seed, "straggler-part", server_round, party) * total)))

    def _fault(self, party: int, server_round: int) -> str | None:
        rate = self.cfg.engine.fault_rate
        if rate <= 0 or uniform(self.cfg.seed, "fault", server_round, party) >= rate:
            return None
        return "raise" if uniform(self.cfg.seed, "fault-kind", server_round, party) < 0.5 else "nan"

    def _shared(self, msg: Message) -> SharedContent:
        """The parts of a message its whole cohort shares, decoded once per round.

        Flower's strategies send one RecordDict to every node of a round; on the local
        engine the cohort's messages hold the same object, so the config and arrays are
        read once, not once per party (in a Ray actor each message is its own copy).
        """
        content = msg.content
        cached = self._shared_cache
        if cached is not None and cached[0] is content:
            return cached[1]
        config = dict(content.config_records.get("config", ConfigRecord()))
        arrays = content.array_records
        shared = SharedContent(
            config=config,
            server_round=int(config.get("server-round", 0)),
            global_state=record_to_state(arrays["arrays"]) if "arrays" in arrays else OrderedDict(),
            records={
                k: OrderedDict((kk, vv.to(self.device)) for kk, vv in record_to_state(v).items())
                for k, v in arrays.items()
                if k != "arrays"
            },
        )
        self._shared_cache = (content, shared)
        return shared

    def _context(self, shared: SharedContent, party: int, global_state: dict) -> TrainContext:
        rule_cls = self.algo.Rule
        return TrainContext(
            model=self.model,
            global_state=global_state,
            params=self.cfg.strategy,
            config=shared.config,
            records=shared.records,
            state=self.store.load(party) if rule_cls.uses_state else None,
            party=party,
            server_round=shared.server_round,
            device=self.device,
            criterion=self.criterion,
            lr=self.cfg.train.lr,
            momentum=self.cfg.train.momentum,
            build_model=self.build_model,
            train_labels=self.train_labels(party),
            num_classes=self.exp.bundle.num_classes,
            party_weight=self.exp.party_weight(party),
        )

    def _load_global(self, shared: SharedContent) -> OrderedDict[str, torch.Tensor]:
        if shared.targets is None:
            self.model.load_state_dict(shared.global_state)
            shared.targets = load_targets(self.model, shared.global_state)
        else:  # what load_state_dict does, without walking the modules (issue 34: prepare 0.30 -> 0.15 ms a client)
            with torch.no_grad():
                torch._foreach_copy_(shared.targets, list(shared.global_state.values()))
        if not self.algo.Rule.needs_global:
            return OrderedDict()
        # a detached copy on the device: rules compare against the weights received
        return OrderedDict((k, v.detach().clone()) for k, v in self.model.state_dict().items())

    def prepare(self, msg: Message, context: Context) -> PartyRound:
        """Everything a party's round needs before its first step (shared by all executors)."""
        party = int(context.node_config[PARTITION_KEY])
        shared = self._shared(msg)
        server_round = shared.server_round
        fault = self._fault(party, server_round)
        if fault == "raise":
            raise InjectedFault(f"injected fault (engine.fault_rate) in party {party}, round {server_round}")
        t0 = time.perf_counter()
        ctx = self._context(shared, party, self._load_global(shared))
        data = self.party_data(party)
        epochs, max_steps = self.local_plan(party, server_round, len(data))
        gen = torch_generator(self.cfg.seed, "train", server_round, party, device=self.device)
        # before the rule sees the model: the loss of the weights as received (q-FFL's F_k(w^t), Oort)
        probe = self.global_loss(data) if shared.config.get(GLOBAL_LOSS_KEY) else {}
        rule = self.algo.Rule(ctx)
        return PartyRound(msg, party, server_round, fault, t0, ctx, data, epochs, max_steps, gen, rule, probe)

    def global_loss(self, data: PartyData) -> dict[str, float]:
        """``global_loss`` and ``global_loss_rms`` of the model as it is now (the received
        global weights) on the party's training data (``fedsim.client.training.sample_losses``)."""
        mean, rms = sample_losses(self.model, data, self.cfg.eval.batch_size, self.device, self.criterion)
        return {"global_loss": mean, "global_loss_rms": rms}

    def finish(
        self, job: PartyRound, stats: TrainStats, weights: Mapping[str, torch.Tensor] | None = None, keep: bool = False
    ) -> Message:
        """The reply of a party whose trained weights are ``weights`` (a state_dict in
        the model's key order), by default those in ``self.model``; ``keep``: the reply
        stays in this process, its arrays keep their tensors (``state_to_record``)."""
        out = job.rule.on_train_end(stats.steps)
        packer = None
        if weights is None:
            shared = self._shared(job.msg)
            if shared.targets is not None:  # the model's tensors, found without walking its modules
                weights = OrderedDict(zip(shared.global_state, shared.targets))
                if keep and out.shared_keys is None and job.fault is None:
                    packer = self._packer(shared, weights)
            else:
                weights = self.model.state_dict()
        if out.shared_keys is not None:  # a personalised algorithm keeps the other layers at home
            weights = OrderedDict((k, weights[k]) for k in out.shared_keys)
        if job.fault == "nan":
            weights = OrderedDict(weights)
            first = next(k for k, v in weights.items() if torch.is_floating_point(v))
            weights[first] = torch.full_like(weights[first], float("nan"))
        metrics = metric_record(
            {
                "num-examples": int(stats.num_examples),
                "train_loss": float(stats.loss) if job.fault != "nan" else float("nan"),
                "train_objective": float(stats.objective) if job.fault != "nan" else float("nan"),
                "train_accuracy": float(stats.accuracy),
                "steps": int(stats.steps),
                "epochs": int(job.epochs),
                "party-id": int(job.party),
                "train_time_s": float(time.perf_counter() - job.t0),
                **({"injected-fault": 1} if job.fault == "nan" else {}),
                **job.probe,
                **{k: float(v) for k, v in out.metrics.items()},
            }
        )
        arrays, names, state = self._reply_arrays(job, weights, out.state, keep, packer)
        content = record_dict({"arrays": arrays, "metrics": metrics})
        if names is not None:
            content["comm"] = names
        if state is not None:
            # kept only if the server aggregates this reply (it commits the round's states)
            self.store.save_pending(job.party, job.server_round, state)
        for key, rec in out.records.items():
            content[key] = state_to_record(rec, keep)
        return Message(content, reply_to=job.msg)

    @staticmethod
    def _packer(shared: SharedContent, weights: Mapping[str, torch.Tensor]) -> Packer | None:
        """The round's Packer of the model's own tensors (``weights``), made at its first reply:
        the parties after it pack the model without finding the plan again (a cross-device
        reply cost 0.16 ms, most of it per entry: ``benchmarks/peers.py`` 1000x10)."""
        if shared.packer is None:
            shared.packer = Packer(weights)
        return shared.packer if shared.packer.live else None

    def _reply_arrays(
        self,
        job: PartyRound,
        weights: Mapping[str, torch.Tensor],
        state: dict | None,
        keep: bool,
        packer: Packer | None = None,
    ) -> tuple[ArrayRecord, ConfigRecord | None, dict | None]:
        """The reply's arrays: the trained entries as they are or, with ``comm.compressor``,
        their update d_k = w_k - w encoded (``fedsim/comm/update.py``; only then is there a
        record of the encoded keys); and the party's new client state, with the codec's
        residual when it keeps one. The plain record is built only when it is sent."""
        if self.codec is None:
            return (packer.record() if packer is not None else state_to_record(weights, keep)), None, state
        previous = self.store.load(job.party, extensions=True) if self.codec.feedback else None
        gen = torch_generator(self.cfg.seed, "compress", job.server_round, job.party)
        enc = self.codec.encode(weights, self._shared(job.msg).global_state, previous, gen, job.server_round)
        state = state_with_residual(state, previous, enc.residual) if self.codec.feedback else state
        return enc.arrays, enc.keys, state

    def train(self, msg: Message, context: Context, keep: bool = False) -> Message:
        job = self.prepare(msg, context)
        # dropout and any other draw from torch's global generator
        seed_torch(derive(self.cfg.seed, "torch", job.server_round, job.party), self.device)
        try:
            if self.dpsgd:
                return self.finish(job, self.train_dpsgd(job), keep=keep)
            stats = train_local(*self._trainer_args(job), job.max_steps, self.has_bn)
        except torch.cuda.OutOfMemoryError as exc:  # one client's OOM must not end the run
            torch.cuda.empty_cache()
            raise RuntimeError(
                f"CUDA out of memory in party {job.party}: lower train.batch_size, use engine.num_gpus "
                "so fewer clients share the GPU, or train.amp: true"
            ) from exc
        return self.finish(job, stats, keep=keep)

    def _trainer_args(self, job: PartyRound) -> tuple:
        """What both trainers (plain and DP-SGD) take first: the model, the party's rule and
        data, ``train.*``, its epochs, its generator and the device."""
        return self.model, job.rule, job.data, self.cfg.train, job.epochs, job.gen, self.device

    def train_dpsgd(self, job: PartyRound) -> TrainStats:
        """``privacy.mode: dpsgd``: the party trains with Opacus (``fedsim.client.dpsgd``)."""
        p = self.cfg.privacy
        sigma = float(job.ctx.config.get(SIGMA_KEY, p.noise_multiplier))  # calibrated on the server
        return train_dpsgd(
            *self._trainer_args(job),
            sigma,
            p.max_grad_norm,
            torch_generator(self.cfg.seed, "dpsgd-batches", job.server_round, job.party),
            torch_generator(self.cfg.seed, "dpsgd-noise", job.server_round, job.party, device=self.device),
            job.max_steps,
        )

    def evaluate(self, msg: Message, context: Context) -> Message:
        party = int(context.node_config[PARTITION_KEY])
        shared = self._shared(msg)
        ctx = self._context(shared, party, self._load_global(shared))
        self.algo.Rule(ctx).on_evaluate_begin()
        data = self.party_data(party, val=True)
        b = self.exp.bundle
        idx = data.indices
        loss, cm = evaluate(
            self.model,
            self.x[idx],
            self.y[idx],
            b.mean,
            b.std,
            b.num_classes,
            self.cfg.eval.batch_size,
            self.device,
            self.criterion,
        )
        n = int(idx.numel())
        acc = float(cm.diag().sum()) / n if n else float("nan")
        metrics = metric_record(
            {"num-examples": n, "val_loss": float(loss), "val_accuracy": acc, "party-id": int(party)}
        )
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)


#: modules whose load_state_dict is a copy_ into each tensor (BatchNorm's adds a missing
#: num_batches_tracked only)
_PLAIN_LOADERS = (torch.nn.Module._load_from_state_dict, torch.nn.modules.batchnorm._NormBase._load_from_state_dict)


def load_targets(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> list[torch.Tensor] | None:
    """The tensors ``model.load_state_dict(state)`` copies ``state``'s values into, in its
    order, where that load is nothing but those copies (same keys in the same order, no
    load hooks, no module with a load of its own); else None."""
    for m in model.modules():
        own = type(m)._load_from_state_dict not in _PLAIN_LOADERS
        if own or m._load_state_dict_pre_hooks or m._load_state_dict_post_hooks:
            return None
    current = model.state_dict(keep_vars=True)
    return list(current.values()) if list(current) == list(state) else None


_RUNTIMES: dict[str, ClientRuntime] = {}


def runtime_for(settings: RunSettings) -> ClientRuntime:
    # a sweep in one process keeps only the current runs' models and device data
    return bounded_get(_RUNTIMES, settings.key, 2, lambda: ClientRuntime(experiment_for(settings)))


def make_client_app(settings: RunSettings | Callable[[Context], RunSettings], kept: bool = False) -> ClientApp:
    """A ClientApp bound to ``settings``, or to a function of each message's Context that
    gives them (``flwr run .``'s :data:`fedsim.flwr_apps.client_app`). ``kept``: its replies
    go to the local engine's server, in this process or from a worker process, their
    arrays carrying their tensors packed in one vector (``strategies.arrays.
    state_to_record(keep=True)``; pickled, that vector crosses once, as one array).

    Binding travels with the app: the Ray backend pickles the app into its actors.
    """

    def _rt(context: Context) -> ClientRuntime:
        return runtime_for(settings if isinstance(settings, RunSettings) else settings(context))

    def _privacy(msg: Message, context: Context, call_next) -> Message:
        # the client-side clipping of a privacy mode when the server's DP wrapper asks for
        # it (privacy.mode client-*): the mode's mod, with the run's privacy.* keys
        return privacy_mod(msg, context, call_next, lambda: _rt(context).cfg.privacy)

    app = ClientApp(mods=[_privacy])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return _rt(context).train(msg, context, keep=kept)

    @app.evaluate()
    def evaluate_(msg: Message, context: Context) -> Message:
        return _rt(context).evaluate(msg, context)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        """Tell the server which partition this node holds (engines with opaque node ids),
        or, asked ``global-loss`` with the global model, its loss on this party's training
        data (Power-of-Choice's candidates, ``strategies/selection/powerofchoice.py``)."""
        pid = int(context.node_config[PARTITION_KEY])
        if "arrays" not in msg.content.array_records:
            return Message(RecordDict({"metrics": MetricRecord({"partition-id": pid})}), reply_to=msg)
        rt = _rt(context)
        rt.model.load_state_dict(record_to_state(msg.content.array_records["arrays"]))
        found = rt.global_loss(rt.party_data(pid))
        return Message(RecordDict({"metrics": metric_record({"partition-id": pid, **found})}), reply_to=msg)

    return app
