"""The paper's reported numbers as data (Yin et al., CVPR 2021; PAPER.md), written once so every
notebook, table and test puts ours beside the same values.

Lower is better for feature distance, FFT-2D and LPIPS; higher for PSNR, label accuracy and IIP.
"""

from __future__ import annotations

# Table 1: label recovery accuracy (%) on ImageNet, 10K random batches without repeated labels.
# batch size -> {"train"|"val": {"sum": baseline (iDLG extended), "min": GradInversion eq. 8}}
TABLE1_LABEL_ACCURACY = {
    1: {"train": {"sum": 100.0, "min": 100.0}, "val": {"sum": 100.0, "min": 100.0}},
    8: {"train": {"sum": 90.89, "min": 99.06}, "val": {"sum": 96.08, "min": 99.47}},
    32: {"train": {"sum": 89.88, "min": 99.29}, "val": {"sum": 90.32, "min": 99.19}},
    64: {"train": {"sum": 84.51, "min": 98.79}, "val": {"sum": 82.27, "min": 98.21}},
    96: {"train": {"sum": 80.53, "min": 97.88}, "val": {"sum": 82.13, "min": 98.11}},
}
TABLE1_TRIALS = 10_000

# Table 2: ablation at batch 8, ResNet-50 (MoCo v2), BN_exact. The feature-distance column's
# definition is illegible in the source (we read it as the L2 distance of avg-pool features).
TABLE2_ABLATION = {
    "noise": {"feature_dist": 8.625, "fft2d": 0.706, "psnr": 9.964, "lpips": 1.351},
    "grad": {"feature_dist": 4.190, "fft2d": 0.404, "psnr": 10.753, "lpips": 0.919},
    "fidelity": {"feature_dist": 3.206, "fft2d": 0.279, "psnr": 12.058, "lpips": 0.655},
    "group_lazy": {"feature_dist": 2.918, "fft2d": 0.233, "psnr": 12.261, "lpips": 0.578},
    "group_registered": {"feature_dist": 2.685, "fft2d": 0.175, "psnr": 12.929, "lpips": 0.484},
}
TABLE2_ROW_NAMES = {
    "noise": "noise N(0, I) (start)",
    "grad": "L_grad",
    "fidelity": "+ R_fidelity",
    "group_lazy": "+ R_group, lazy",
    "group_registered": "+ R_group, registered",
}

# Table 3: feature-extractor strength, full method at batch 8.
TABLE3_NETWORK_STRENGTH = {
    "resnet50_moco": {"fft2d": 0.175, "psnr": 12.929, "lpips": 0.484},
    "resnet50": {"fft2d": 0.204, "psnr": 11.771, "lpips": 0.684},
    "resnet18": {"fft2d": 0.218, "psnr": 10.729, "lpips": 0.693},
}
TABLE3_ROW_NAMES = {
    "resnet50_moco": "ResNet-50, MoCo v2 (71.0% top-1)",
    "resnet50": "ResNet-50, standard training",
    "resnet18": "ResNet-18, standard training",
}

# Table 4: comparison at batch 8, ResNet-50, ImageNet (FFT-2D / PSNR / LPIPS).
TABLE4_COMPARISON = {
    "noise": {"needs_labels": False, "needs_gan": False, "fft2d": 0.706, "psnr": 9.964, "lpips": 1.351},
    "gan_projection": {"needs_labels": True, "needs_gan": True, "fft2d": 0.275, "psnr": 10.149, "lpips": 0.722},
    "deepinversion": {"needs_labels": True, "needs_gan": False, "fft2d": 0.238, "psnr": 10.131, "lpips": 0.728},
    "inverting_gradients": {"needs_labels": False, "needs_gan": False, "fft2d": 0.365, "psnr": 11.703, "lpips": 0.749},
    "dlg": {"needs_labels": False, "needs_gan": False, "fft2d": 0.602, "psnr": 10.252, "lpips": 1.319},
    "gradinversion_bn_approx": {"needs_labels": False, "needs_gan": False, "fft2d": 0.232, "psnr": 11.235, "lpips": 0.633},
    "gradinversion_bn_exact": {"needs_labels": False, "needs_gan": False, "fft2d": 0.175, "psnr": 12.929, "lpips": 0.484},
}
TABLE4_ROW_NAMES = {
    "noise": "noise N(0, I)",
    "gan_projection": "BigGAN-deep latent projection",
    "deepinversion": "DeepInversion (BN prior + labels, no gradients)",
    "inverting_gradients": "Inverting Gradients (Geiping et al.)",
    "dlg": "Deep Leakage from Gradients (Zhu et al.)",
    "gradinversion_bn_approx": "GradInversion, BN_approx (running stats)",
    "gradinversion_bn_exact": "GradInversion, BN_exact",
}

# Figures: facts the paper states (no plotted values are legible beyond these).
FIGURE_FACTS = {
    "fig5": "Batch 1, a hard sample: GradInversion recovers it where DLG and Inverting Gradients do not.",
    "fig6_7": "Recovered content falls as the batch grows (batches up to 48); at 48 some images are "
              "still recovered almost whole.",
    "fig8": "IIP falls with batch size; about 28% of images are still identified at batch 48.",
    "fig8_vulnerable": "Batches from the vulnerable population (per class, the image with the largest "
                       "gradient norm) nearly double IIP at batch 48.",
}
FIG8_IIP_AT_48 = 0.28          # random population, batch 48 ("about 28%")
FIG8_VULNERABLE_FACTOR = 2.0   # vulnerable / random IIP at batch 48 ("nearly double")
FIG8_SAMPLES = {"default": 256, 48: 240}

SETTINGS = {
    "dataset": "ImageNet ILSVRC2012, 224x224, 1000 classes",
    "model": "ResNet-50, MoCo v2 pretrained, classifier fine-tuned (71.0% top-1)",
    "iterations": 20_000, "seeds": 8, "hardware": "NVIDIA V100 32 GB, AMP",
}

# Table 4's setting, and what each prior attack was (the rows are configurations in
# gradinv_lib.prior_attacks; "needs" columns are TABLE4_COMPARISON's needs_labels/needs_gan).
TABLE4_SETTINGS = {"batch_size": 8, "model": "ResNet-50", "dataset": "ImageNet, 224x224",
                   "metrics": ("fft2d", "psnr", "lpips")}
TABLE4_METHOD_FACTS = {
    "gan_projection": "BigGAN-deep latent projected with a StyleGAN2-style projector; loss on gradients.",
    "deepinversion": "BN-statistics prior with the true labels; uses no gradients.",
    "inverting_gradients": "Cosine gradient loss + TV, Adam (Geiping et al. 2020).",
    "dlg": "Squared L2 gradient loss, labels optimised jointly, L-BFGS (Zhu et al. 2019).",
    "gradinversion_bn_approx": "GradInversion with the BN prior on running statistics.",
    "gradinversion_bn_exact": "GradInversion with the BN prior on the batch's own statistics.",
}
