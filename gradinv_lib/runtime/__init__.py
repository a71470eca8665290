"""Where and how long runs execute: group consistency's seeds over torchrun ranks (sec. 3.4,
``distributed``), a study's jobs fanned out to worker processes or Slurm (``sweeps``, with each
result kept as it arrives: ``sweep_store``, ``sweep_submitit``, ``slurm_state``), the node that
computed each result (``nodes``) and checkpoints that make a run resumable (``checkpoint``)."""
