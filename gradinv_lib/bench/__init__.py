"""``gradinv bench``: how fast the inversion loop (eq. 1, sec. 3.5) runs against its lower bounds
(``speed``), where an iteration spends its time (``profile``), whether bf16 autocast changes the
result (``amp``), the timing primitives (``timing``) and the report (``report``)."""
