"""The config sections whose keys the chosen plug-ins extend: one dataclass per section.

``data.*``, ``partition.*``, ``model.*``, ``engine.*``, ``output.*``, ``privacy.*`` and
``comm.*`` hold the keys every config has had (those every data set, scheme, model, engine,
tracker, privacy mode or compressor accepts, and the ones today's built-in plug-ins read); a
plug-in's ``Params`` subclasses its section's dataclass, declares its own keys with
:func:`fedsim.util.params.hp`, and is the section's dataclass of a config that chooses
it. Only data and the standard library: the partition schemes (numpy-only
``partitioners``) subclass :class:`PartitionConfig` without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataConfig:
    """``data.*``: which dataset, where it lives, and how parties see it."""

    dataset: str = "synthetic-images"
    root: str = "data"
    download: bool = False
    val_fraction: float = 0.0
    feature_noise: float = 0.0
    # seed of generated datasets (synthetic, synthetic-images): fixed across runs, so
    # that the run's ``seed`` varies the split and the training, not the task itself
    seed: int = 0
    # synthetic-images: sizes and shape of the generated set
    n_train: int = 5000
    n_test: int = 1000
    image_shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    num_classes: int = 10
    noise: float = 0.6
    # synthetic (FedProx): Synthetic(alpha, beta), one group per party by default
    synthetic_alpha: float = 1.0
    synthetic_beta: float = 1.0
    num_groups: int = 0
    # CIFAR-style augmentation (crop with padding 4 + horizontal flip); None = the
    # dataset's default (on for cifar10/cifar100, off otherwise)
    augment: bool | None = None
    # K-fold cross-validation over the pooled training data: with cv_folds = K > 1, fold
    # cv_fold is held out as the evaluation set and the other folds are partitioned
    cv_folds: int = 0
    cv_fold: int = 0
    # images of hf and imagefolder resized to image_size x image_size (0 = as stored)
    image_size: int = 0
    # cifar100: train on the 100 fine classes or the 20 superclasses (coarse)
    cifar100_labels: str = "fine"
    # hf (Hugging Face datasets): a save_to_disk directory, a directory of data files
    # (parquet, arrow, ...) or a Hub name found in the local cache
    hf_path: str | None = None
    hf_split_train: str = "train"
    hf_split_test: str = "test"
    hf_image_key: str = "image"
    # set for character sequences (then hf_image_key is not read)
    hf_text_key: str | None = None
    hf_label_key: str = "label"
    # natural groups (writer, user) for partition.scheme natural
    hf_group_key: str | None = None


@dataclass
class PartitionConfig:
    """``partition.*``: how the training set is split into parties (dataidxs)."""

    scheme: str = "iid"
    n_parties: int = 10
    beta: float = 0.5
    classes_per_party: int = 2
    min_size: int = 10
    shards_per_party: int = 2
    max_redraws: int = 100000
    # what the label-skew schemes split by: the training labels, or the dataset's
    # superclasses (cifar100) so that each party sees some superclasses
    by: str = "label"
    # scheme flwr: a flwr-datasets partitioner class and its constructor arguments
    # (num_partitions and seed come from partition.n_parties and seed)
    flwr_partitioner: str | None = None
    flwr_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """``model.*``: the network trained by every party."""

    name: str = "simple-cnn"
    projection_head: bool = False
    proj_dim: int = 256
    dropout: float = 0.0
    # mlp: the hidden layers' widths
    hidden: list[int] = field(default_factory=lambda: [200, 200])
    # simple-cnn: BatchNorm after each conv and hidden FC layer (FedBN's CNN)
    batch_norm: bool = False
    # resnet*: the normalisation layers, batch or group, and GroupNorm's groups
    norm: str = "batch"
    norm_groups: int = 2


@dataclass
class TrainConfig:
    """``train.*``: the local training of one party in one round."""

    # an int, or [lo, hi]: drawn per party per round from the seed (FedNova's setting)
    epochs: Any = 1
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    loss: str = "ce"
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    amp: bool = False


@dataclass
class FederationConfig:
    """``federation.*``: rounds, sampling and tolerance of the federation."""

    rounds: int = 10
    fraction_fit: float = 1.0
    fraction_evaluate: float = 0.0
    # central evaluation every k rounds and after the last; 0 = never (benchmarks)
    eval_every: int = 1
    min_fit_clients: int = 1
    straggler_fraction: float = 0.0
    max_failure_fraction: float = 0.5
    # a round whose mean training loss is non-finite or above this multiple of round 1's,
    # or whose cohort is mostly non-finite, has diverged (0 = only non-finite counts)
    divergence_factor: float = 10.0
    # stop: end the run with status "diverged"; continue: warn, record it, train on
    on_divergence: str = "stop"
    # parties that never train, evaluated like the others (the participation gap):
    # a share in [0, 1) or a count >= 1, drawn from the seed
    holdout_parties: float = 0.0


@dataclass
class EngineConfig:
    """``engine.*``: where and how clients run."""

    name: str = "local"
    device: str = "auto"
    workers: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    ray_address: str | None = None
    client_timeout: float | None = None
    fault_rate: float = 0.0
    # train a cohort in lockstep with torch.func.vmap: auto = on CUDA when the setup allows
    batch_clients: str = "auto"
    deterministic: bool = False
    # torch threads per client process on every engine (a Ray actor gets as many): equal
    # thread counts give bit-equal results across engines; 0 = torch's default (all cores)
    threads: int = 1


@dataclass
class EvalConfig:
    """``eval.*``: central evaluation of the global model, and every party's own test data."""

    batch_size: int = 1024
    fbeta: float = 2.0
    train_sample: int = 10000
    # client drift, update cosine, gradient diversity each round (O(K P) per round)
    model_heterogeneity: bool = True
    # each party's own test data: none; split (a share of its data, per class);
    # match (drawn from the central test set with its label proportions); natural (its
    # groups' own test samples: LEAF's users); auto = split for a personalised
    # algorithm (whose own models are what it trains), none otherwise
    local_test: str = "auto"
    local_test_fraction: float = 0.2
    # match: test samples per party; None = proportional to the party's training share
    local_test_size: int | None = None
    # parties evaluated each time (a cohort drawn from the seed); 0 = every party
    local_parties: int = 0
    # local epochs of fine-tuning of the global model before the finetune_* evaluation
    # (FedAvg+FT); 0 = no fine-tuning evaluation
    finetune_epochs: int = 0
    # test accuracies whose first reaching summary.json reports (round, simulated seconds):
    # a number or a list of numbers in (0, 1]; None = none
    target_accuracy: Any = None


@dataclass
class OutputConfig:
    """``output.*``: what the run directory keeps."""

    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    tensorboard: bool = False
    plots: bool = True
    # experiment trackers (fedsim/trackers/): any of mlflow, wandb, tensorboard
    trackers: list[str] = field(default_factory=list)
    # MLflow's store: None = MLFLOW_TRACKING_URI, else a SQLite database in the sweep or run directory
    mlflow_uri: str | None = None
    mlflow_experiment: str = "fedsim"
    wandb_project: str = "fedsim"
    # model.pt among the files handed to MLflow / W&B
    track_model: bool = False


@dataclass
class PrivacyConfig:
    """``privacy.*``: differential privacy and its accounting (README "Differential privacy").

    ``mode``: none; client-level DP-FedAvg with the clipping on the server
    (``central-fixed``, ``central-adaptive``) or in the clients' mods (``client-fixed``,
    ``client-adaptive``); sample-level DP-SGD on every party with Opacus (``dpsgd``).
    """

    mode: str = "none"
    # sigma: noise std over the clipping norm (of the update for client-level modes, of a
    # per-sample gradient for dpsgd)
    noise_multiplier: float = 1.0
    # C of client-level modes (the adaptive modes' initial C)
    clipping_norm: float = 0.1
    # adaptive modes (Andrew et al. 2021): the share of updates left unclipped that C tracks,
    # its geometric learning rate, and the std of the noised count (None = cohort / 20)
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    clipped_count_stddev: float | None = None
    # dpsgd: per-sample gradient clipping norm
    max_grad_norm: float = 1.0
    # delta of the reported epsilon, below 1/N; None = min(1e-5, 0.1/N) (N: the parties that train,
    # or the largest party's training samples for dpsgd)
    target_delta: float | None = None
    # stop before the round that would spend more, or with calibrate: choose noise_multiplier
    # up front so that federation.rounds rounds spend exactly this
    target_epsilon: float | None = None
    calibrate: bool = False
    accountant: str = "rdp"


@dataclass
class SystemConfig:
    """``system.*``: system heterogeneity on a simulated clock (README "System heterogeneity").

    ``source`` chooses where the parties' device profiles come from (the plug-ins of
    ``fedsim/system/sources/``); ``none`` (the default) runs without a clock, as before.
    The other keys are every source's: the round deadline in simulated seconds,
    over-selection (Bonawitz et al. 2019) and FedScale's augmentation factor of the
    compute time (Lai et al. 2022).
    """

    source: str = "none"
    round_deadline: float | None = None
    over_selection: float = 1.0
    augmentation_factor: float = 3.0


@dataclass
class CommConfig:
    """``comm.*``: how the model updates travel (README "Communication").

    ``compressor``: the codec applied to each reply's update w_k - w (``none``: the
    weights as they are); ``budget_mb``: stop the run before the round that would take
    its bytes sent (up and down, 10^6 bytes a MB) past this; ``downlink``: the server's
    broadcast through the same codec too, with its own error-feedback residual
    (``fedsim/comm/downlink.py``; Sattler et al. 2019's STC compresses both directions).
    """

    compressor: str = "none"
    budget_mb: float | None = None
    downlink: bool = False


@dataclass
class AsyncConfig:
    """``asynchronous.*``: asynchronous federated learning on the simulated clock
    (README "Asynchronous training"). The issue calls the section ``async``, a Python
    keyword: no dataclass field can bear it, so the section is ``asynchronous``.

    ``mode`` chooses the server (the plug-ins of ``fedsim/asynchronous/servers/``):
    ``off`` (the default) runs synchronous rounds, as before; ``fedbuff`` and
    ``fedasync`` run the event-driven loop (``fedsim/asynchronous/loop.py``).
    ``concurrency``: parties training at once (0: the synchronous cohort,
    ``federation.fraction_fit`` of the parties that train).
    """

    mode: str = "off"
    concurrency: int = 0
