"""``gradinv gpu-report``: the GPU evidence that CPU budgets cannot give, in one prepared call
that plans itself into the minutes a device lends (probe each stage, allot by priority, checkpoint
every chunk, stop before the limit, resume in the next call): the trained CIFAR-10 CNN at full
budget, the pretrained EfficientNet-Lite0 at 224 px, and the bench with the loop's profile.

Modules: ``stages`` (what runs), ``plan`` (probes and allotment), ``attack_stage`` and
``bench_stage`` (running one stage), ``budget`` (deadlines), ``report`` (report and export),
``run`` (one call), ``cli`` (the command), ``wheelhouse`` (the wheels a GPU machine needs).
Nothing heavy is imported here, so the command line loads fast.
"""
