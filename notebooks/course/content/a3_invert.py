"""Assignment 3: invert a client's batch of 4 with the student's own objective."""

from gradinv_lib.course.authoring import answer, markdown, provided, solution, tests

TITLE = "Assignment 3 - Invert a batch"

OBJECTIVE = """
def grad_distance(grads, targets):
    \"\"\"sum_l ||grads[l] - targets[l]||_2 (eq. 3), a scalar tensor (your assignment 2).\"\"\"
    ### BEGIN SOLUTION
    return torch.stack([(g - t).flatten().norm() for g, t in zip(grads, targets)]).sum()
    ### END SOLUTION


def total_variation(x):
    \"\"\"sum over images of the 4-direction L2 total variation (eq. 9), a scalar tensor (your assignment 2).\"\"\"
    ### BEGIN SOLUTION
    diffs = (x[..., :, :-1] - x[..., :, 1:], x[..., :-1, :] - x[..., 1:, :],
             x[..., 1:, :-1] - x[..., :-1, 1:], x[..., :-1, :-1] - x[..., 1:, 1:])
    return sum(d.flatten(1).norm(dim=1).sum() for d in diffs)
    ### END SOLUTION


def objective(grads, targets, images):
    \"\"\"What the attack minimises for one candidate batch: gradient matching plus ALPHA_TV times the TV.\"\"\"
    ### BEGIN SOLUTION
    return grad_distance(grads, targets) + ALPHA_TV * total_variation(images)
    ### END SOLUTION
"""


def cells():
    return [
        markdown("a3_intro", r"""
        # Assignment 3 - Invert a batch

        Now you are the attacker. A client of a federated training run computed the gradient of
        its batch of 4 private images on the quick network (a LeNet with BatchNorm, 32 px, in
        training mode) and shared it. You recover the images by gradient descent on the images
        themselves (eq. 1), starting from noise, with **your** objective from assignment 2:

        $$\hat x = \arg\min_x \; \mathcal{L}_{grad}(x) + \alpha_{TV}\, TV(x)$$

        `invert(objective, update, ITERATIONS)` runs the loop (Adam with cosine decay and the
        paper's Langevin noise, sec. 3.5; the labels come from the min rule of eq. 8) and calls
        your `objective(grads, targets, images)` at every step with the candidate's per-layer
        gradients, the client's, and the candidate images (normalised, shape (4, 3, 32, 32)).

        The autograder checks that your reconstruction's PSNR is at least 5 dB above the noise it
        started from and that at least 3 of the 4 images are identified: the pool image whose
        pixels correlate best with a reconstruction is its original.
        Points: PSNR 4, identification 3 (autograded), written answer 2 (by hand). About a minute.
        """),
        provided("a3_parameters", """
        ITERATIONS = 400   # attack steps
        ALPHA_TV = 1e-3    # weight of the total variation
        BATCH_SIZE = 4     # the client's batch
        SEED = 0           # batch, noise start and Langevin noise
        """, tags=("parameters",)),
        provided("a3_setup", """
        import functools

        import matplotlib.pyplot as plt
        import torch

        from gradinv_lib.course.lab import client_batch, invert, score
        from gradinv_lib.plotting import image_grid

        batch, update = client_batch(BATCH_SIZE, seed=SEED)   # the private batch and what the client shares
        print("the client shares", len(update.gradients), "gradient tensors for a batch of", update.batch_size)
        """),
        markdown("a3_objective_text", """
        ## 1. Your objective

        Copy your `grad_distance` and `total_variation` from assignment 2, then combine them.
        """),
        solution("a3_objective", OBJECTIVE),
        provided("a3_attack", """
        @functools.lru_cache(maxsize=None)
        def results():
            \"\"\"Your attack on the client's update, scored (computed once).\"\"\"
            return score(invert(objective, update, iterations=ITERATIONS, seed=SEED), batch)


        s = results()
        print(f"PSNR: reconstruction {s['psnr']:.2f} dB, noise start {s['noise_psnr']:.2f} dB, "
              f"each original's mean colour {s['mean_colour_psnr']:.2f} dB; identified {s['identified']}/{s['batch_size']}")
        image_grid({"original": s["originals"], "mean colour": s["originals"].mean(dim=(2, 3), keepdim=True).expand_as(s["originals"]),
                    "yours": s["reconstruction"]})
        plt.show()
        """),
        tests("a3_test_psnr", """
        s = results()
        assert s["psnr"] >= s["noise_psnr"] + 5.0, f"PSNR {s['psnr']:.2f} dB is not 5 dB above the noise start ({s['noise_psnr']:.2f} dB)"
        """, points=4),
        tests("a3_test_identified", """
        s = results()
        assert s["identified"] >= 3, f"only {s['identified']} of {s['batch_size']} images identified by pixel correlation"
        """, points=3),
        answer("a3_answer_gap", """
        **Compare your reconstruction with the mean-colour reference. What does the gap in PSNR
        mean, and why is the mean colour a fairer baseline than the noise start?**

        Each original's flat mean colour carries no content at all, yet on these small photos it
        scores 14-15 dB, about 5 dB above the noise start: PSNR rewards getting the colour right
        even with nothing recognisable. A reconstruction that only beats the noise start may
        therefore have recovered nothing but colour; ours scores well above the mean colour
        (25-30 dB) and every image is identified, so edges and shapes were recovered, not only the
        average colour. The gap is what the gradient leaked beyond a colour guess.
        """, points=2),
    ]
