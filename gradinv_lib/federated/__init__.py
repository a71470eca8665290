"""The client side of the threat model (sec. 3): what a federated client shares and how gradinv
reads it: a simulated FedSGD client (``client``: the batch-averaged gradient and its BN
statistics), FedAvg's K local steps (``fedavg``, beyond the paper), update files as real clients
send them (``update_formats``) and the checks that refuse an implausible one (``update_checks``).
Defences a client may run are in ``gradinv_lib.defences``."""

from gradinv_lib.exports import lazy_exports

PUBLIC = {"ClientUpdate": "client", "simulate_client": "client", "save_update": "client", "load_update": "client",
          "read_update": "update_formats", "local_training": "fedavg"}
__all__ = sorted(PUBLIC)
__getattr__ = lazy_exports(__name__, PUBLIC)
