"""Assignment 4: defend the client - top-k pruning and Gaussian noise on the update."""

from gradinv_lib.course.authoring import answer, markdown, provided, solution, tests

from a3_invert import OBJECTIVE  # noqa: E402  (make_sources.py loads the content folder as modules)

TITLE = "Assignment 4 - Defend"


def cells():
    return [
        markdown("a4_intro", r"""
        # Assignment 4 - Defend

        The client wants to keep training useful but stop the attack of assignment 3. Two classic
        defences change the update before it is sent:

        * **Top-k pruning** (Zhu et al., the DLG paper): in each gradient tensor of $n$ entries keep
          the $k = \max(1, \mathrm{round}(\text{keep} \cdot n))$ entries largest in magnitude and set
          the others to zero.
        * **Gaussian noise**: add $\mathcal{N}(0, \sigma^2)$ noise to every entry (DP-SGD adds such
          noise after clipping each image's gradient; here there is no clipping, so there is no
          privacy guarantee).

        You implement both, attack the defended update with your own objective, and measure the
        utility the defence costs: the cosine similarity between the defended and the clean
        update (1: the training step is unchanged). The autograder checks that pruning keeps
        exactly k entries of every tensor, the noise's statistics, and that your attack on the
        pruned update scores below the mean-colour reference. Last, a lab with sliders.
        Points: pruning 3, noise 2, defended attack 3 (autograded), written answer 2 (by hand).
        About two minutes.
        """),
        provided("a4_parameters", """
        ITERATIONS = 400     # attack steps
        ALPHA_TV = 1e-3      # weight of the total variation
        BATCH_SIZE = 4       # the client's batch
        KEEP = 0.01          # fraction of each gradient tensor the pruning keeps
        SIGMA = 0.03         # standard deviation of the Gaussian noise
        SEED = 0             # batch, noise start and Langevin noise
        LAB_BATCH_SIZE = 4   # the lab's run without widgets (what papermill executes)
        LAB_KEEP = 0.1
        LAB_ITERATIONS = 200
        """, tags=("parameters",)),
        provided("a4_setup", """
        import functools

        import matplotlib.pyplot as plt
        import torch

        from gradinv_lib.course.lab import client_batch, invert, score, with_gradients
        from gradinv_lib.course.widgets import lab_run, leakage_lab
        from gradinv_lib.defences import prune_gradients, update_cosine   # the references
        from gradinv_lib.plotting import image_grid

        batch, update = client_batch(BATCH_SIZE, seed=SEED)
        """),
        markdown("a4_objective_text", "## 1. Your objective (copy it from assignment 3)"),
        solution("a4_objective", OBJECTIVE),
        markdown("a4_prune_text", """
        ## 2. Top-k pruning

        `prune(gradients, keep)` takes a dict (parameter name -> gradient tensor) and returns a
        **new** dict of the same names and shapes, each tensor keeping its
        `max(1, round(keep * n))` entries of largest magnitude (the rest zero). Do not modify the
        input tensors.
        """),
        solution("a4_prune", """
        def prune(gradients, keep):
            \"\"\"Per tensor, the max(1, round(keep * n)) entries largest in magnitude; the rest zero.\"\"\"
            ### BEGIN SOLUTION
            out = {}
            for name, g in gradients.items():
                k = max(1, round(keep * g.numel()))
                mask = torch.zeros(g.numel(), dtype=torch.bool)
                mask[g.flatten().abs().topk(k).indices] = True
                out[name] = g * mask.view_as(g)
            return out
            ### END SOLUTION
        """),
        tests("a4_test_prune", """
        toy = prune({"w": torch.tensor([1.0, -5.0, 3.0, 0.5])}, 0.5)["w"]
        assert toy.tolist() == [0.0, -5.0, 3.0, 0.0], f"keep the 2 largest magnitudes, found {toy.tolist()}"
        clean = {n: g.clone() for n, g in update.gradients.items()}
        for keep in (0.01, 0.1, 0.5):
            pruned = prune(update.gradients, keep)
            assert set(pruned) == set(update.gradients)
            for name, g in update.gradients.items():
                k = max(1, round(keep * g.numel()))
                assert int(torch.count_nonzero(pruned[name])) == k, f"{name}: expected {k} entries kept at keep={keep}"
            reference = prune_gradients(update.gradients, keep)
            assert all(torch.equal(pruned[n], reference[n]) for n in reference), f"keep={keep}: not the largest entries"
        assert all(torch.equal(update.gradients[n], clean[n]) for n in clean), "prune modified its input"
        """, points=3),
        markdown("a4_noise_text", """
        ## 3. Gaussian noise

        `add_noise(gradients, sigma, seed)` returns a new dict with independent
        $\\mathcal{N}(0, \\sigma^2)$ noise added to every entry, drawn from a `torch.Generator`
        seeded with `seed` (the same seed gives the same noise).
        """),
        solution("a4_noise", """
        def add_noise(gradients, sigma, seed=0):
            \"\"\"Every entry plus N(0, sigma^2) noise from a generator seeded with `seed`.\"\"\"
            ### BEGIN SOLUTION
            gen = torch.Generator().manual_seed(seed)
            return {n: g + sigma * torch.randn(g.shape, generator=gen, dtype=g.dtype) for n, g in gradients.items()}
            ### END SOLUTION
        """),
        tests("a4_test_noise", """
        clean = {n: g.clone() for n, g in update.gradients.items()}
        noisy = add_noise(update.gradients, 0.05, seed=1)
        delta = torch.cat([(noisy[n] - clean[n]).flatten() for n in clean])
        assert abs(float(delta.std()) / 0.05 - 1) < 0.02 and abs(float(delta.mean())) < 0.002, "expected N(0, 0.05^2) noise"
        again, other = add_noise(update.gradients, 0.05, seed=1), add_noise(update.gradients, 0.05, seed=2)
        assert all(torch.equal(again[n], noisy[n]) for n in clean), "the same seed must give the same noise"
        assert not torch.equal(other[next(iter(clean))], noisy[next(iter(clean))]), "another seed must give other noise"
        assert all(torch.equal(update.gradients[n], clean[n]) for n in clean), "add_noise modified its input"
        """, points=2),
        markdown("a4_attack_text", """
        ## 4. The attack against each defence

        Your attack on the clean update, on the pruned one (`KEEP`) and on the noisy one (`SIGMA`),
        each scored against the mean-colour reference, with the utility each defence leaves.
        """),
        provided("a4_attack", """
        DEFENCES = {"none": lambda g: g, f"prune keep={KEEP}": lambda g: prune(g, KEEP),
                    f"noise sigma={SIGMA}": lambda g: add_noise(g, SIGMA, SEED)}


        @functools.lru_cache(maxsize=None)
        def results(name):
            \"\"\"Your attack on the update your defence `name` sent, scored, with its utility (computed once).\"\"\"
            defended = with_gradients(update, DEFENCES[name])
            out = score(invert(objective, defended, iterations=ITERATIONS, seed=SEED), batch)
            return {**out, "utility": update_cosine(defended, update)}


        for name in DEFENCES:
            s = results(name)
            print(f"{name:18s} PSNR {s['psnr']:5.2f} dB (mean colour {s['mean_colour_psnr']:.2f}), "
                  f"identified {s['identified']}/{s['batch_size']}, utility cosine {s['utility']:.3f}")
        image_grid({"original": results("none")["originals"], **{n: results(n)["reconstruction"] for n in DEFENCES}})
        plt.show()
        """),
        tests("a4_test_defended", """
        s = results(f"prune keep={KEEP}")
        assert s["psnr"] < s["mean_colour_psnr"], \\
            f"the pruned update still gives {s['psnr']:.2f} dB, above the mean colour ({s['mean_colour_psnr']:.2f} dB)"
        assert s["utility"] > 0.5, "pruning should keep most of the update's direction"
        """, points=3),
        answer("a4_answer_cost", """
        **What did each defence cost, and did it stop the leak? Look at the identification
        column too.**

        Pruning to 1% keeps the update's direction almost intact (cosine about 0.96: training is
        barely slowed) and pushes the attack's PSNR below the mean-colour reference, so by PSNR
        the attack fails. Yet the blurry reconstructions are still identified by pixel
        correlation: what survives is the layout of the image, which is enough to pick the
        original out of a gallery. Gaussian noise at this sigma costs far more utility (the
        cosine drops) for a comparable effect. PSNR below a content-free reference is a weak
        criterion for privacy; identification is a stricter one.
        """, points=2),
        markdown("a4_lab_text", """
        ## 5. Lab: leakage against batch size and pruning

        Move the sliders and press **Attack**: your attack, on a client batch of the chosen size
        whose update your `prune` defended (keep = 1: no defence). The cell before the widget runs
        the same once with the lab parameters.
        """),
        provided("a4_lab", """
        run = lab_run(objective, prune, LAB_BATCH_SIZE, LAB_KEEP, LAB_ITERATIONS, SEED)
        print(f"batch {LAB_BATCH_SIZE}, keep {LAB_KEEP}: PSNR {run['psnr']:.2f} dB, identified {run['identified']}/{run['batch_size']}")
        plt.show()
        leakage_lab(objective, prune, iterations=LAB_ITERATIONS, seed=SEED)
        """),
    ]
