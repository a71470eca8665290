"""Assignment 2: the objective - per-layer gradient matching (eq. 3) and total variation (eq. 9)."""

from gradinv_lib.course.authoring import markdown, provided, solution, tests

TITLE = "Assignment 2 - The objective (eqs. 3 and 9)"


def cells():
    return [
        markdown("a2_intro", r"""
        # Assignment 2 - The objective (GradInversion, eqs. 3 and 9)

        The attacker optimises images $\hat x$ until the gradient they produce matches the one the
        client shared. GradInversion's matching term (eq. 3) is the **sum over layers of the
        (non-squared) L2 norm** of the difference, one "layer" being one parameter tensor:

        $$\mathcal{L}_{grad}(\hat x) = \sum_l \left\lVert \nabla_{W^{(l)}} L(\hat x, \hat y) - \Delta W^{(l)} \right\rVert_2$$

        Its fidelity prior (eq. 9) includes the total variation. We use the L2 form of
        DeepInversion, whose constants the paper uses: for an image $x$ (C x H x W) the sum, over
        the four neighbour directions (right, down, and the two diagonals), of the L2 norm of the
        pixel differences; for a batch, the sum over its images:

        $$TV(x) = \lVert x_{:, :, :-1} - x_{:, :, 1:} \rVert_2 + \lVert x_{:, :-1, :} - x_{:, 1:, :} \rVert_2
        + \lVert x_{:, 1:, :-1} - x_{:, :-1, 1:} \rVert_2 + \lVert x_{:, :-1, :-1} - x_{:, 1:, 1:} \rVert_2$$

        Both must be differentiable: the attack back-propagates through them, and through the
        network's own gradient (a second derivative). The tests compare your values and their
        gradients with the companion library's, and run `torch.autograd.gradcheck` in float64.
        Points: distance 3 + 3, total variation 2 + 2 (all autograded).
        """),
        provided("a2_parameters", """
        BATCH_SIZE = 2   # images of the client batch the gradients come from
        SEED = 0         # batch and noise seed
        """, tags=("parameters",)),
        provided("a2_setup", """
        import torch
        from torch.autograd import gradcheck

        from gradinv_lib.federated.client import target_gradients
        from gradinv_lib.course.lab import client_batch, parameter_gradients, quick_setting
        from gradinv_lib.attack.objectives import AttackState, GradientMatching, TotalVariation  # the references

        model, pool = quick_setting()                      # the quick network (LeNet with BatchNorm, 32 px)
        batch, update = client_batch(BATCH_SIZE, seed=SEED)
        targets = target_gradients(update, model)          # the client's gradient, one tensor per layer
        noise = torch.randn((BATCH_SIZE, 3, 32, 32), generator=torch.Generator().manual_seed(SEED))
        grads = parameter_gradients(noise, update.labels, update)   # what noise images produce
        grads64, targets64 = [g.detach().double() for g in grads], [t.double() for t in targets]  # exact sums
        print(len(targets), "layers; shapes:", [tuple(t.shape) for t in targets][:4], "...")


        def reference_distance(g, t):
            return GradientMatching(t, metric="l2", implementation="reference")(AttackState(images=None, grads=[x[None] for x in g]))


        def reference_tv(x):
            return TotalVariation()(AttackState(images=x[None]))
        """),
        markdown("a2_distance_text", """
        ## 1. Per-layer gradient matching (eq. 3)

        `grad_distance(grads, targets)` takes two lists of tensors of equal shapes and returns a
        scalar tensor: the sum over the list of the L2 norm of each difference.
        """),
        solution("a2_distance", """
        def grad_distance(grads, targets):
            \"\"\"sum_l ||grads[l] - targets[l]||_2 (eq. 3), a scalar tensor.\"\"\"
            ### BEGIN SOLUTION
            return torch.stack([(g - t).flatten().norm() for g, t in zip(grads, targets)]).sum()
            ### END SOLUTION
        """),
        tests("a2_test_distance_values", """
        toy = grad_distance([torch.tensor([3.0, 0.0]), torch.tensor([[0.0], [4.0]])], [torch.zeros(2), torch.zeros(2, 1)])
        assert abs(float(toy) - 7.0) < 1e-6, f"expected 3 + 4 = 7 (a norm per layer, not squared), found {float(toy)}"
        value = grad_distance(grads64, targets64)
        assert torch.allclose(value.double(), reference_distance(grads64, targets64), rtol=1e-9), value
        ### BEGIN HIDDEN TESTS
        gen = torch.Generator().manual_seed(7)
        g = [torch.randn(5, 3, generator=gen), torch.randn(7, generator=gen), torch.randn(2, 2, 2, generator=gen)]
        t = [torch.randn(x.shape, generator=gen) for x in g]
        assert torch.allclose(grad_distance(g, t).double(), reference_distance(g, t).double(), rtol=1e-5)
        ### END HIDDEN TESTS
        """, points=3),
        tests("a2_test_distance_gradients", """
        gen = torch.Generator().manual_seed(1)
        g = [torch.randn(4, 3, dtype=torch.float64, generator=gen, requires_grad=True),
             torch.randn(5, dtype=torch.float64, generator=gen, requires_grad=True)]
        t = [torch.randn(x.shape, dtype=torch.float64, generator=gen) for x in g]
        assert gradcheck(lambda a, b: grad_distance([a, b], t), tuple(g)), "gradcheck failed"
        reference = torch.autograd.grad(reference_distance(g, t), g)
        mine = torch.autograd.grad(grad_distance(g, t), g)
        assert all(torch.allclose(m, r, rtol=1e-6, atol=1e-9) for m, r in zip(mine, reference)), \\
            "the gradient of your distance differs from eq. 3's"
        # through the network: d distance / d images (the gradient the attack follows)
        x = noise.clone().requires_grad_(True)
        mine = torch.autograd.grad(grad_distance(parameter_gradients(x, update.labels, update), targets), x)[0]
        x = noise.clone().requires_grad_(True)
        reference = torch.autograd.grad(reference_distance(parameter_gradients(x, update.labels, update), targets), x)[0]
        error = float((mine - reference).norm() / reference.norm())   # float32: about 1e-4 when right
        assert error < 1e-2, f"the image gradient of your objective differs from eq. 3's (relative error {error:.2g})"
        """, points=3),
        markdown("a2_tv_text", """
        ## 2. Total variation (eq. 9)

        `total_variation(x)` takes a batch `x` of shape `(B, C, H, W)` and returns a scalar tensor:
        the sum over images and over the four directions above of the L2 norm of the differences.
        """),
        solution("a2_tv", """
        def total_variation(x):
            \"\"\"sum over images of the 4-direction L2 total variation (eq. 9), a scalar tensor.\"\"\"
            ### BEGIN SOLUTION
            diffs = (x[..., :, :-1] - x[..., :, 1:], x[..., :-1, :] - x[..., 1:, :],
                     x[..., 1:, :-1] - x[..., :-1, 1:], x[..., :-1, :-1] - x[..., 1:, 1:])
            return sum(d.flatten(1).norm(dim=1).sum() for d in diffs)
            ### END SOLUTION
        """),
        tests("a2_test_tv_values", """
        flat = torch.full((2, 3, 5, 5), 0.3)
        assert abs(float(total_variation(flat))) < 1e-6, "a flat image has no variation"
        step = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
        assert abs(float(total_variation(step)) - (2 ** 0.5 + 2)) < 1e-5, "right: sqrt(2), down: 0, diagonals: 1 + 1"
        assert torch.allclose(total_variation(noise).double(), reference_tv(noise).double(), rtol=1e-5)
        ### BEGIN HIDDEN TESTS
        x = torch.rand((3, 3, 7, 6), generator=torch.Generator().manual_seed(3))
        assert torch.allclose(total_variation(x).double(), reference_tv(x).double(), rtol=1e-5)
        ### END HIDDEN TESTS
        """, points=2),
        tests("a2_test_tv_gradients", """
        x = torch.rand((2, 3, 5, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
        assert gradcheck(total_variation, (x,)), "gradcheck failed"
        mine = torch.autograd.grad(total_variation(x), x)[0]
        reference = torch.autograd.grad(reference_tv(x), x)[0]
        assert torch.allclose(mine, reference, rtol=1e-6, atol=1e-9), "the gradient of your TV differs from eq. 9's"
        """, points=2),
    ]
