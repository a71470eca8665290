"""A course kit on gradient leakage (beyond the paper): four nbgrader assignments (labels, eq. 8;
the objective, eqs. 3 and 9; inverting a batch; a defence), the helpers their notebooks call
(:mod:`.lab`, :mod:`.widgets`), the notebooks' authoring helpers (:mod:`.authoring`) and release
and autograding through nbgrader (:mod:`.grader`, ``gradinv course``)."""

ASSIGNMENTS = ("a1_labels", "a2_objective", "a3_invert", "a4_defend")
