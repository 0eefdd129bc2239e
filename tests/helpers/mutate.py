"""``make mutate``: mutation testing one module at a time, each against its own covering fast tests.

mutmut collects, once per run, which tests call each function (a traced run of the whole selection) and then runs
each mutant against the selected tests that called the mutated function. Over the whole suite that costs a traced
run of several hundred tests before the first mutant, and every mutant of a function that an end-to-end test
happens to call pays for that test. Here each module gets a scratch copy of the checkout
(``mutants/<module>/``) whose ``[tool.mutmut]`` mutates that module only and selects only the fast tests named
for it in ``COVERING_TESTS``; the per-module score and every survivor are printed by
``tests/helpers/mutation_report.py`` and kept in ``mutants/<module>/report.txt``.

Each module's run starts with serial steps (mutmut's fork server importing torch and collecting the tests, the
traced stats run, the clean run: ~20 s whatever the module's size) and ends waiting on its slowest mutant, so
``--parallel`` modules run at once, each with ``--jobs`` workers, the largest source files first: two modules of
one worker each keep both cores of a 2-core machine busy through those steps.

Mutants registered equivalent in ``tests/helpers/equivalent_mutants.py`` are marked skipped before the run
(``skip_equivalents.py``: a survivor costs every covering test) and reported as equivalent, not run;
``--run-equivalents`` runs them too, to check the registry. Survivors that only a test outside the selection can kill
(several processes, a GPU) are registered in ``tests/helpers/killed_elsewhere.py`` with that test;
``--run-elsewhere`` (``make mutate ELSEWHERE=1``) runs each against it after the module's run (``run_elsewhere.py``).

Usage: ``python tests/helpers/mutate.py [--parallel M] [--jobs N] [--run-equivalents] [--run-elsewhere] [--mutants GLOB]... [MODULE ...]`` (modules as the keys of
``COVERING_TESTS``, e.g. ``saturation/signals.py``; none = all). ``--mutants`` takes mutmut's mutant-name globs,
e.g. ``'lmdynamics.compare.runs.x_summarize*'``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# module under src/lmdynamics -> the fast test modules that cover it (mutmut then runs, per mutant, those of
# their tests that called the mutated function). Chosen by what each test module imports and exercises; a test
# module that only reaches a module through a training run or a subprocess is not listed (it would be slow per
# mutant and is marked slow anyway). ``test_x::test_y`` names one test.
COVERING_TESTS: dict[str, tuple[str, ...]] = {
    "metrics/anisotropy.py": ("test_metrics_anisotropy", "test_metrics_edges", "test_properties"),
    "metrics/cka.py": ("test_metrics_cka", "test_metrics_edges", "test_properties"),
    "metrics/ov.py": ("test_metrics_ov", "test_metrics_edges", "test_properties"),
    "metrics/spectrum.py": ("test_metrics_spectrum", "test_metrics_edges", "test_properties",
                            "test_gini::test_gini_closed_forms_and_the_pairwise_definition"),
    "metrics/trends.py": ("test_metrics_trends", "test_trajectories_classify"),
    # the speed switches of configure_model: the fast tests that build each switch's objects (~2.5 s) and take one
    # checkpointed step (~5 s)
    "training/module.py": ("test_recipe", "test_speed::test_each_switch_reaches_the_objects_that_run",
                           "test_speed::test_activation_checkpointing_gives_the_plain_gradients_and_no_deprecation_warning"),
    "training/resume.py": ("test_resume_pruning", "test_resume_when"),  # test_resume is all slow (kill tests)
    "store.py": ("test_store",),
    "summaries.py": ("test_summaries",),
    "saturation/signals.py": ("test_saturation_signals_direction", "test_saturation_detect", "test_saturation_heads"),
    "saturation/analyze.py": ("test_saturation_signals_direction", "test_saturation_detect", "test_saturation_heads",
                              "test_saturation_inputs", "test_saturation_cli"),
    "saturation/detect.py": ("test_saturation_detect", "test_saturation_heads"),
    # the commands' round trips train heads (~10 s a mutant): the rows' own fast tests only
    "saturation/rows.py": ("test_saturation_rows::test_checkpoint_identity_from_run_json_or_the_directory",
                           "test_saturation_rows::test_werror_and_lowrank_rows_read_back_as_written",
                           "test_saturation_rows::test_rows_sit_at_layer_minus_one_with_their_documented_index_step_and_tokens",
                           "test_saturation_rows::test_lowrank_results_skip_a_checkpoint_without_its_full_head_and_keep_the_others",
                           "test_saturation_rows::test_the_reports_figures_come_in_run_model_and_numeric_step_order_whatever_the_table_order"),
    # the report's text and scaling-law section (moved out of saturation/analyze.py)
    "report/saturation_report.py": ("test_saturation_report", "test_saturation_signals_direction"),
    "saturation/scaling.py": ("test_saturation_scaling", "test_saturation_report"),
    # the command's test tokenises a corpus (~8 s a mutant): the fast tests, corpus_tokens' own included
    "saturation/werror.py": ("test_saturation_werror::test_ngram_matrix_counts_by_hand",
                             "test_saturation_werror::test_curve_equals_dense_svd_and_is_zero_at_and_past_the_rank",
                             "test_saturation_werror::test_corpus_matrix_from_a_token_stream_matches_dense",
                             "test_saturation_werror::test_ngram_matrix_is_the_counted_next_token_distribution_of_every_context",
                             "test_saturation_werror::test_ngram_matrix_limits",
                             "test_saturation_werror::test_default_dims_are_powers_of_two_up_to_the_rank_bound_plus_the_hidden_sizes",
                             "test_saturation_werror::test_top_singular_values_are_the_dense_ones_for_any_k",
                             "test_saturation_werror::test_dims_must_be_non_negative",
                             "test_saturation_werror::test_write_gives_the_dense_curve_in_csv_and_table_rows",
                             "test_saturation_werror::test_auto_takes_gram_up_to_gram_max_ids_and_arpack_beyond",
                             "test_saturation_werror::test_ngram_matrix_defaults_to_5_grams_seen_once_for_lists_and_int32_arrays",
                             "test_saturation_werror::test_ngram_matrix_vocabulary_reaches_the_largest_id_of_narrow_integer_tokens",
                             "test_saturation_werror::test_top_singular_values_of_small_square_and_single_row_matrices_are_the_dense_ones",
                             "test_saturation_werror::test_arpack_gives_the_same_values_on_every_call",
                             "test_saturation_werror::test_gram_decomposes_the_smaller_gram_matrix_and_arpack_none",
                             "test_saturation_werror::test_gram_singular_values_of_a_rank_deficient_matrix_are_finite_and_non_negative",
                             "test_saturation_werror::test_curve_is_exactly_zero_at_the_rank_bound_even_when_rounding_exceeds_the_tail_floor",
                             "test_saturation_werror::test_write_defaults_to_5_grams_seen_once_an_empty_description_and_run_corpus",
                             "test_saturation_werror::test_corpus_tokens_are_the_training_stream_a_run_with_these_data_settings_sees",
                             "test_saturation_werror::test_corpus_tokens_defaults_are_a_default_runs_data_settings"),
    "saturation/lowrank_head.py": ("test_saturation_lowrank",),
    "saturation/harness.py": ("test_saturation_harness",),
    "commands/saturation.py": ("test_saturation_options", "test_saturation_cli", "test_saturation_signals_direction",
                               "test_cli_reference"),  # the reference shows every option's default and help text
    "trajectories/classify.py": ("test_trajectories_classify", "test_trajectory_values"),
    # the record/report CLI test takes ~20 s a mutant: compare's own fast tests only
    "trajectories/compare.py": ("test_trajectories_compare::test_group_perplexity_is_exp_of_the_mean_loss_not_a_mean_of_perplexities",
                                "test_trajectories_compare::test_curves_that_are_one_function_of_validation_perplexity_overlap_exactly",
                                "test_trajectories_compare::test_different_evaluation_tokens_are_refused",
                                "test_trajectories_compare::test_x_axes_are_step_tokens_six_n_t_and_validation_perplexity",
                                "test_trajectories_compare::test_spread_is_the_mean_across_model_std_of_log_group_perplexity_on_the_common_log_range",
                                "test_trajectories_compare::test_overlap_ratio_is_nan_when_the_spread_at_equal_step_is_zero",
                                "test_trajectories_compare::test_traced_rows_carry_every_axis_the_group_perplexity_and_its_token_count",
                                "test_trajectories_compare::test_overlap_ratio_is_the_spread_at_equal_perplexity_over_the_spread_at_equal_step"),
    "trajectories/contrastive.py": ("test_trajectories_contrastive",),
    # the recorded-run tests record trajectories and build the bundled corpus (~30 s a mutant): the fast ones only
    "trajectories/counts.py": ("test_trajectories_counts::test_a_counts_file_as_npy_or_json_gives_one_count_per_id",
                               "test_trajectories_counts::test_a_text_file_counts_every_token_of_every_document_without_separators",
                               "test_trajectories_counts::test_a_run_directory_counts_its_training_split_with_the_tokenizer_its_config_names",
                               "test_trajectories_counts::test_a_run_without_a_fixed_training_split_is_refused_naming_what_it_trained_on",
                               "test_trajectories_counts::test_the_bundled_corpus_counts_its_default_training_split_with_the_tokenizer_given"),
    "trajectories/offline.py": ("test_trajectories_offline", "test_trajectory_values", "test_interventions"),
    "trajectories/record.py": ("test_trajectories_storage", "test_trajectory_values"),
    "trajectories/scoring.py": ("test_trajectories_contrastive",),
    "trajectories/storage.py": ("test_trajectories_storage",),
    "trajectories/tokens.py": ("test_trajectories_tokens", "test_trajectories_storage", "test_trajectories_counts", "test_trajectory_values"),
    "data/synthetic.py": ("test_synthetic",),
    "models/heads.py": ("test_interventions", "test_generate", "test_saturation_heads"),
    "compare/runs.py": ("test_compare_runs",),  # the report tests: ~7 s a mutant
    "compare/statistics.py": ("test_compare_statistics",),  # the report tests: ~7 s a mutant
    "compare/groups.py": ("test_compare_grouping",),  # the report tests: ~7 s a mutant
    "compare/grouping.py": ("test_compare_grouping", "test_compare_verdict",
                            "test_interventions::test_runs_of_mos_heads_with_and_without_component_rank_are_told_apart"),
    # the report tests run the whole command with figures (~7 s a mutant): the verdict's own fast tests
    "compare/verdict.py": ("test_compare_verdict",),
    "sweep.py": ("test_sweep", "test_sweep_summary"),
    "callbacks/trajectories.py": ("test_trajectories_recorder",),  # test_trajectories_live (the CLI's) is all slow
    # test_callbacks' monitored runs (the planted collapse over 45 runs: ~9 s; the resumed runs: 1-2 s) and its CLI
    # tests: left out; the hooks' own fast tests and the rule's
    "callbacks/head_rank.py": ("test_head_rank_live",
                               "test_callbacks::test_saturation_monitor_needs_both_signals",
                               "test_callbacks::test_head_rank_values_on_a_designed_head_and_probe",
                               "test_callbacks::test_saturation_thresholds_are_strict",
                               "test_callbacks::test_the_rule_is_the_same_live_and_replayed",
                               "test_callbacks::test_bad_monitor_settings_are_refused",
                               "test_callbacks::test_the_edges_of_the_monitor_settings_are_allowed",
                               "test_callbacks::test_a_replayed_rule_is_the_live_rule_ready_for_the_next_validation",
                               "test_callbacks::test_the_live_monitor_reads_the_head_kl_the_tables_show",
                               "test_callbacks::test_a_monitor_resumed_before_anything_was_written_starts_fresh",
                               "test_callbacks::test_the_monitor_noise_uses_every_successive_difference_it_has",
                               "test_callbacks::test_the_kl_reference_is_the_head_at_the_loss_minimum_when_measured_less_often"),
    "generate.py": ("test_generate", "test_generate_sampling"),
}
COPIED = ("src", "tests", "configs", "analysis", "train", "docs", "pyproject.toml")  # docs: the command reference test


def test_path(name: str) -> str:
    """``test_x`` -> ``tests/test_x.py``; ``test_x::test_y`` -> ``tests/test_x.py::test_y`` (one test)."""
    file, sep, test = name.partition("::")
    return f"tests/{file}.py{sep}{test}"


def mutmut_block(module: str) -> str:
    """The ``[tool.mutmut]`` table of one module's scratch copy: the project's shared settings plus the module
    and its tests."""
    tests = ", ".join(f'"{test_path(name)}"' for name in COVERING_TESTS[module])
    return (f'only_mutate = ["src/lmdynamics/{module}"]\n'
            f'pytest_add_cli_args_test_selection = [{tests}, "-p", "no:cacheprovider", "-m", "not slow"]\n')


def scratch_copy(module: str, work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, work / name)
    shared = ROOT.parent / "shared"  # the shared data (the Pythia tokenizer) the tests find beside the checkout:
    if shared.is_dir():  # mutmut runs the tests from work/mutants/, whose ../shared is work/shared
        (work / "shared").symlink_to(shared.resolve(), target_is_directory=True)
    text = (work / "pyproject.toml").read_text()
    marker = "[tool.mutmut]\n"
    if marker not in text:
        raise SystemExit("mutate: pyproject.toml has no [tool.mutmut] table")
    (work / "pyproject.toml").write_text(text.replace(marker, marker + mutmut_block(module), 1))


def run_module(module: str, jobs: int, mutants: list[str], run_equivalents: bool = False,
               run_elsewhere: bool = False) -> tuple[float, str]:
    """Mutation-test one module; returns (seconds of ``mutmut run``, the report's score line). Registered
    equivalent mutants are marked skipped first (``skip_equivalents.py``) unless ``run_equivalents``; with
    ``run_elsewhere``, the survivors registered as killed elsewhere then run against their test (``run_elsewhere.py``)."""
    work = ROOT / "mutants" / module.removesuffix(".py").replace("/", ".")
    scratch_copy(module, work)
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "OMP_NUM_THREADS": "1", "LMDYNAMICS_MUTATE": "1"}  # figures not rendered: tests/conftest.py
    mutmut = str(Path(sys.executable).parent / "mutmut")
    start = time.monotonic()
    with open(work / "run.log", "w") as log:
        done = subprocess.CompletedProcess((), 0)
        if not run_equivalents:
            done = subprocess.run([sys.executable, str(work / "tests/helpers/skip_equivalents.py")], cwd=work, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        if done.returncode == 0:
            done = subprocess.run([mutmut, "run", "--max-children", str(jobs), *mutants], cwd=work, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        if done.returncode == 0 and run_elsewhere:
            log.flush()
            done = subprocess.run([sys.executable, str(work / "tests/helpers/run_elsewhere.py")], cwd=work,
                                  env={**env, "LMDYNAMICS_MUTATE": ""}, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        tail = (work / "run.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"mutate: mutmut failed on {module} (log: {work / 'run.log'}):\n{tail}")
    report = subprocess.run([sys.executable, str(ROOT / "tests/helpers/mutation_report.py")], cwd=work, env=env,
                            capture_output=True, text=True, check=True).stdout
    (work / "report.txt").write_text(report + f"mutmut run: {seconds:.0f} s\n")
    score = next((ln for ln in report.splitlines() if ln.startswith("mutation score")), "no score")
    return seconds, score


def largest_first(modules: list[str]) -> list[str]:
    """The order modules start in: the largest source first (most mutants), so a long module does not start last."""
    return sorted(modules, key=lambda m: -(ROOT / "src" / "lmdynamics" / m).stat().st_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="modules under src/lmdynamics (default: all measured)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants of one module run at once")
    parser.add_argument("--parallel", type=int, default=2, help="modules run at once")
    parser.add_argument("--mutants", action="append", default=[],
                        help="a mutmut mutant-name glob (repeatable; default: every mutant of the modules)")
    parser.add_argument("--run-equivalents", action="store_true",
                        help="run the registered equivalent mutants too (default: marked skipped, not run)")
    parser.add_argument("--run-elsewhere", action="store_true",
                        help="run the survivors registered in killed_elsewhere.py against their (slow or GPU) test")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in COVERING_TESTS]
    if unknown:
        parser.error(f"not a measured module: {', '.join(unknown)} (choose from {', '.join(COVERING_TESTS)})")
    if args.jobs < 1 or args.parallel < 1:
        parser.error("--jobs and --parallel must be at least 1")
    modules = largest_first(args.modules or list(COVERING_TESTS))
    total, start = 0.0, time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.parallel) as pool:
        runs = {pool.submit(run_module, module, args.jobs, args.mutants, args.run_equivalents,
                                args.run_elsewhere): module for module in modules}
        for run in concurrent.futures.as_completed(runs):
            module = runs[run]
            try:
                seconds, score = run.result()
            except SystemExit:
                pool.shutdown(cancel_futures=True)  # the modules not started yet; those running finish
                raise
            total += seconds
            print(f"{module}: {score} ({seconds:.0f} s; report: mutants/{module.removesuffix('.py').replace('/', '.')}"
                  f"/report.txt)", flush=True)
    print(f"make mutate: {time.monotonic() - start:.0f} s wall, {total:.0f} s of mutmut runs "
          f"({len(modules)} modules, {args.parallel} at once, {args.jobs} worker(s) each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
