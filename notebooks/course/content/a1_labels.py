"""Assignment 1: the labels of a batch from the final layer's gradient (eq. 8)."""

from gradinv_lib.course.authoring import answer, markdown, provided, solution, tests

TITLE = "Assignment 1 - Labels from the last layer (eq. 8)"


def cells():
    return [
        markdown("a1_intro", r"""
        # Assignment 1 - Labels from the last layer (GradInversion, eq. 8)

        A federated client shares the gradient of its batch-mean cross-entropy. For the final
        layer $z = W o + b$ ($W$: $N$ classes $\times$ $M$ features) one image contributes
        $\partial L / \partial W = (p - \mathrm{onehot}(y))\, o^\top$, and $o \ge 0$ after a ReLU
        and average pooling: the row of the image's own class is $\le 0$, every other row $\ge 0$.

        * **Min rule** (GradInversion, eq. 8): score each class by the minimum of its row,
          $s_n = \min_m \Delta W_{n,m}$; the batch's $K$ labels are the $K$ classes with the most
          negative scores.
        * **Sum rule** (iDLG extended to batches, the baseline of Table 1): the same with
          $s_n = \sum_m \Delta W_{n,m}$.

        You implement both, measure them from batch 8 to 96 on the pool of real images that ships
        with the companion (pretrained EfficientNet-Lite0), and explain where the min rule breaks.
        Points: min rule 3, sum rule 2, measurement 2 (autograded), written answer 2 (by hand).
        Run the whole notebook (about a minute) before you hand it in.
        """),
        provided("a1_parameters", """
        RESOLUTION = 64                       # image side the pretrained network sees (the paper: 224)
        BATCH_SIZES = [8, 16, 32, 64, 96]     # batch sizes to measure (Table 1 of the paper)
        TRIALS = 30                           # random batches per batch size
        SEED = 0                              # seed of the first batch
        """, tags=("parameters",)),
        provided("a1_setup", """
        import matplotlib.pyplot as plt
        import torch

        from gradinv_lib.course.lab import LabelBench
        from gradinv_lib.attack.labels import recover_labels   # the reference the tests compare with

        bench = LabelBench(resolution=RESOLUTION)        # pretrained Lite0 features of the pool, once
        labels, dW = bench.batch(8, seed=SEED)           # one batch: its true labels and dW of the last layer
        print("true labels:", labels.sort().values.tolist(), "| dW:", tuple(dW.shape))


        def check_rule(rule, name, cases):
            \"\"\"Assert that `rule` returns the library's labels (rule `name`) on batches (size, seed).\"\"\"
            for size, seed in cases:
                _, grad = bench.batch(size, seed=seed)
                assert torch.equal(torch.as_tensor(rule(grad, size)).long().cpu(), recover_labels(grad, size, name)), \\
                    f"{name} rule differs from the library at batch {size}, seed {seed}"
        """),
        markdown("a1_rules_text", """
        ## 1. The two rules

        Write `sum_rule(dW, batch_size)` and `min_rule(dW, batch_size)`. Each takes the final
        layer's weight gradient `dW` (a `(num_classes, features)` tensor) and returns the
        `batch_size` recovered classes as a 1-D integer tensor **sorted ascending**. Break ties in
        the scores by the lower class index (`torch.argsort(..., stable=True)` does that).
        """),
        solution("a1_sum_rule", """
        def sum_rule(dW, batch_size):
            \"\"\"The batch_size classes whose row of dW has the most negative sum, sorted ascending.\"\"\"
            ### BEGIN SOLUTION
            score = dW.double().sum(dim=1)
            return torch.argsort(score, stable=True)[:batch_size].sort().values
            ### END SOLUTION
        """),
        solution("a1_min_rule", """
        def min_rule(dW, batch_size):
            \"\"\"The batch_size classes whose row of dW has the most negative minimum, sorted ascending (eq. 8).\"\"\"
            ### BEGIN SOLUTION
            score = dW.double().amin(dim=1)
            return torch.argsort(score, stable=True)[:batch_size].sort().values
            ### END SOLUTION
        """),
        tests("a1_test_sum_rule", """
        toy = torch.tensor([[-1.0, 5.0], [-0.5, -0.5], [0.2, 0.3]])
        assert torch.as_tensor(sum_rule(toy, 1)).tolist() == [1], "the sum rule adds up each row"
        check_rule(sum_rule, "sum", [(8, 0), (32, 1)])
        ### BEGIN HIDDEN TESTS
        check_rule(sum_rule, "sum", [(16, 101), (64, 102), (96, 103)])
        ### END HIDDEN TESTS
        """, points=2),
        tests("a1_test_min_rule", """
        toy = torch.tensor([[-1.0, 5.0], [-0.5, -0.5], [0.2, 0.3]])
        assert torch.as_tensor(min_rule(toy, 1)).tolist() == [0], "the min rule looks at each row's smallest entry"
        assert torch.as_tensor(min_rule(toy, 2)).tolist() == [0, 1], "return the classes sorted ascending"
        check_rule(min_rule, "min", [(8, 0), (32, 1)])
        ### BEGIN HIDDEN TESTS
        check_rule(min_rule, "min", [(16, 201), (64, 202), (96, 203)])
        ### END HIDDEN TESTS
        """, points=3),
        markdown("a1_measure_text", """
        ## 2. Accuracy against batch size

        Write `measure(rule, batch_sizes, trials)`: for each batch size, the label accuracy of
        `rule` over `trials` random batches of distinct labels. `bench.accuracy(rule, batch_size,
        trials, seed=SEED)` gives one such number (the mean fraction of each batch's true labels
        that the rule recovers, over the batches drawn with seeds `SEED, SEED + 1, ...`).
        """),
        solution("a1_measure", """
        def measure(rule, batch_sizes, trials):
            \"\"\"[label accuracy of rule at each batch size], over `trials` batches each.\"\"\"
            ### BEGIN SOLUTION
            return [bench.accuracy(rule, size, trials, seed=SEED) for size in batch_sizes]
            ### END SOLUTION
        """),
        provided("a1_plot", """
        accuracy = {"min rule (eq. 8)": measure(min_rule, BATCH_SIZES, TRIALS),
                    "sum rule (iDLG)": measure(sum_rule, BATCH_SIZES, TRIALS)}
        for name, values in accuracy.items():
            print(f"{name:18s}", "  ".join(f"B={b}: {100 * a:5.1f}%" for b, a in zip(BATCH_SIZES, values)))
            plt.plot(BATCH_SIZES, [100 * a for a in values], "o-", label=name)
        plt.xlabel("batch size"); plt.ylabel("label accuracy (%)"); plt.legend(); plt.show()
        """),
        tests("a1_test_measure", """
        sizes, trials = [8, 96], 10
        reference = [bench.accuracy(lambda g, k: recover_labels(g, k, "min"), b, trials, seed=SEED) for b in sizes]
        mine = measure(min_rule, sizes, trials)
        assert len(mine) == 2 and all(abs(m - r) < 1e-9 for m, r in zip(mine, reference)), (mine, reference)
        baseline = measure(sum_rule, [96], trials)[0]
        assert baseline < mine[1] - 0.02, "at batch 96 the sum rule should lose labels that the min rule keeps"
        """, points=2),
        markdown("a1_repeat_text", """
        ## 3. A repeated label

        Below, every label of a batch of 8 appears twice (4 classes, 2 images each). The min rule
        still returns 8 *distinct* classes.
        """),
        provided("a1_repeat", """
        labels, grad = bench.batch(8, seed=SEED, repeats=2)
        recovered = torch.as_tensor(min_rule(grad, 8))
        print("true labels:     ", labels.sort().values.tolist())
        print("min rule returns:", recovered.tolist())
        print("classes not in the batch:", sorted(set(recovered.tolist()) - set(labels.tolist())))
        """),
        answer("a1_answer_repeat", """
        **Why does a repeated label break the min rule? What would you need to recover repeats?**

        The min rule ranks classes and keeps the K most negative rows, so it can only return K
        distinct classes. With a repeated label the batch holds fewer than K distinct classes:
        only those rows are negative, and the remaining slots are filled with absent classes
        (rows >= 0, ranked by chance), while the count of each present class is lost - the two
        images of one class add up in a single row. Counting repeats needs the row's magnitude,
        e.g. the bias gradient (-(1/B) sum (1 - p_i) over the class's images) together with an
        estimate of each image's confidence.
        """, points=2),
    ]
