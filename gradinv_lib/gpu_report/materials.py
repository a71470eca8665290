"""Models, data sets and client batches of the stages, built once per call and shared by the
probes and the runs (the two Lite0 stages share one network)."""

from __future__ import annotations

import torch

from gradinv_lib.data import sample_batch
from gradinv_lib.federated.client import simulate_client
from gradinv_lib.profiles import build_for_dataset, load_dataset

from .stages import StageSpec


class Materials:
    """Cache of (model, data set, batch, client update) per stage setting on one ``device``."""

    def __init__(self, device, seed: int = 0):
        self.device, self.seed = torch.device(device), seed
        self._models, self._datasets, self._batches = {}, {}, {}

    def model(self, spec: StageSpec):
        key = (spec.model, spec.weights, spec.dataset)
        if key not in self._models:
            self._models[key] = build_for_dataset(spec.model, spec.weights, spec.dataset, device=self.device)
        return self._models[key]

    def dataset(self, spec: StageSpec):
        key = (spec.dataset, spec.resolution)
        if key not in self._datasets:
            self._datasets[key] = load_dataset(spec.dataset, spec.resolution)
        return self._datasets[key]

    def batch(self, spec: StageSpec):
        """(batch of distinct labels drawn with the call's seed, the client's FedSGD update with
        BN in train mode: BN_exact's statistics)."""
        key = (spec.model, spec.weights, spec.dataset, spec.resolution, spec.batch)
        if key not in self._batches:
            batch = sample_batch(self.dataset(spec), spec.batch, seed=self.seed)
            update = simulate_client(self.model(spec), batch.images.to(self.device),
                                     batch.labels.to(self.device), bn_mode="train")
            self._batches[key] = (batch, update)
        return self._batches[key]
