"""Per-notebook studies of the paper companion: each computes one table or figure, writes it as
cached CSV/JSON with provenance under figures/<profile>/<notebook>/, and plots from that cache."""

from .common import StudyContext, load_results, load_tensors, markdown_table, repo_root, results_dir, show_table

__all__ = ["StudyContext", "load_results", "load_tensors", "markdown_table", "repo_root", "results_dir",
           "show_table"]
