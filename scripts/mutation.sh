#!/usr/bin/env bash
# Mutation testing of one core module with mutmut 3 (see docs/mutation.md).
#
#   scripts/mutation.sh MODULE            mutate MODULE, run only its tests, print the score
#   scripts/mutation.sh MODULE 'GLOB'...  only the mutants named so (e.g. 'morphclimb.rules.x_ranked*')
#   scripts/mutation.sh MODULE results    list the surviving mutants of the last run
#   scripts/mutation.sh MODULE show NAME  the diff of one mutant
#   scripts/mutation.sh list              the modules and what each run covers
#
# MODULE: seeds, budget, state, config, train, rules, halving, forecast, nash, front, pareto,
# morphisms.
# Everything runs in a copy of src/, tests/ and pyproject.toml under $MUTATION_DIR/MODULE
# (default /tmp/morphclimb-mutation), so mutants never appear in the working tree. Each run
# starts afresh; MUTATION_CACHE=keep reuses mutmut's cache there instead (it reruns mutants
# whose function changed, but keeps verdicts across edited tests: quick, not a final score).
# Environment: MUTATION_DIR, MUTATION_CACHE, MUTATION_JOBS (parallel mutants, default 2),
# NICE (default 10), PYTHON (default .venv/bin/python; mutmut 3 is installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
JOBS=${MUTATION_JOBS:-2}
NICE=${NICE:-10}
MUTMUT_SPEC="mutmut>=3.8,<4"

# module -> files to mutate (only_mutate globs) | mutant names to run (globs) | tests
# The tests are the fast ones that exercise the module; subprocess-based tests are left out
# (a subprocess imports the unmutated package, so it cannot kill a mutant).
spec() {
    case "$1" in
    seeds)
        FILES="src/morphclimb/seeds.py"
        NAMES="morphclimb.seeds.*"
        TESTS="tests/test_core_rules.py::test_derived_seeds_are_the_documented_ones
               tests/test_limits.py::test_long_ids_get_their_own_seeds" ;;
    budget)
        FILES="src/morphclimb/budget.py"
        NAMES="morphclimb.budget.*"
        TESTS="tests/test_core_rules.py
               tests/test_search_rules.py::test_a_stopped_climb_journals_the_cost_it_predicted
               tests/test_limits.py::test_time_model_fits_overhead_and_size" ;;
    state)
        FILES="src/morphclimb/state.py"
        NAMES="morphclimb.state.*"
        TESTS="tests/test_core_rules.py
               tests/test_search_rules.py::test_a_resumed_run_counts_the_time_spent_before_the_kill
               tests/test_nash.py::test_incumbent_kept_unless_beaten
               tests/test_limits.py::test_a_tiny_budget_stops_the_climb_but_trains_the_final" ;;
    config)   # the checks only: check() and check_training()
        FILES="src/morphclimb/config.py"
        NAMES="morphclimb.config.x_check*"
        TESTS="tests/test_core_rules.py
               tests/test_config_journal.py
               tests/test_train.py::test_config_rejects_bad_values
               tests/test_train.py::test_config_nesterov_needs_momentum
               tests/test_limits.py::test_halving_settings_are_checked" ;;
    train)    # the SGDR schedule and the learning rate a training step uses
        FILES="src/morphclimb/train.py"
        NAMES="morphclimb.train.x_sgdr_lr* morphclimb.train.xǁTrainConfigǁlr*"
        TESTS="tests/test_core_rules.py::test_sgdr_schedule_edges
               tests/test_train.py::test_sgdr_values_start_middle_end
               tests/test_train.py::test_sgdr_per_batch_and_restart_on_every_fit
               tests/test_train.py::test_constant_mode
               tests/test_search_rules.py::test_the_climb_trains_with_sgdr_or_a_constant_lr" ;;
    rules)    # the step decision (ranked, KeepBest), halving's cut (Halving), the stoppers
        FILES="src/morphclimb/rules.py"
        NAMES="morphclimb.rules.*"
        TESTS="tests/test_rules.py
               tests/test_search_rules.py
               tests/test_nash.py::test_incumbent_kept_unless_beaten
               tests/test_limits.py::test_halving_ties_keep_the_incumbent_first" ;;
    halving)  # successive halving's rungs over a step
        FILES="src/morphclimb/halving.py"
        NAMES="morphclimb.halving.*"
        TESTS="tests/test_search_rules.py
               tests/test_limits.py::test_halving_rungs_are_journaled
               tests/test_limits.py::test_halving_ties_keep_the_incumbent_first
               tests/test_pareto.py::test_halving_cuts_by_level_and_rungs_keep_distilling" ;;
    forecast) # the time budget's predictions (budget_stop, after_climb_costs, time_model)
        FILES="src/morphclimb/forecast.py"
        NAMES="morphclimb.forecast.*"
        TESTS="tests/test_core_rules.py::test_the_time_model_of_a_run_counts_each_training_on_its_data
               tests/test_search_rules.py
               tests/test_limits.py::test_a_tiny_budget_stops_the_climb_but_trains_the_final
               tests/test_limits.py::test_a_budget_can_stop_the_climb_inside_a_step" ;;
    nash)     # the climber: decide, children (make_child, step), the resumed clock, the starts
        FILES="src/morphclimb/nash.py"
        NAMES="morphclimb.nash.xǁClimberǁdecide* morphclimb.nash.xǁClimberǁclock*
               morphclimb.nash.xǁClimberǁ__init__* morphclimb.nash.x_train_config*
               morphclimb.nash.xǁClimberǁmake_child* morphclimb.nash.xǁClimberǁstep__*
               morphclimb.nash.xǁClimberǁto_finish* morphclimb.nash.xǁClimberǁfinish_front*
               morphclimb.nash.x_rules_for* morphclimb.nash.xǁClimberǁpretrain*
               morphclimb.nash.xǁClimberǁtrain_task* morphclimb.nash.xǁClimberǁstarts*
               morphclimb.nash.x_trained_or_raise*"
        TESTS="tests/test_search_rules.py
               tests/test_rules.py
               tests/test_pareto.py
               tests/test_extra_starts.py
               tests/test_limits.py::test_start_from_a_run_begins_with_its_final_network
               tests/test_nash.py::test_algorithm1_bookkeeping
               tests/test_nash.py::test_random_networks_accept_every_child
               tests/test_nash.py::test_incumbent_kept_unless_beaten
               tests/test_limits.py::test_max_params_redraws_and_nothing_trained_exceeds
               tests/test_limits.py::test_a_child_equal_to_its_parent_is_redrawn" ;;
    front)    # the Pareto front's arithmetic: dominance, levels, density, sampling, hypervolume
        FILES="src/morphclimb/front.py"
        NAMES="morphclimb.front.*"
        TESTS="tests/test_pareto.py" ;;
    pareto)   # the Pareto search's rules and the front it hands out
        FILES="src/morphclimb/pareto.py"
        NAMES="morphclimb.pareto.*"
        TESTS="tests/test_pareto.py" ;;
    morphisms)   # the exact morphisms and the graph helpers (_graph.py) the approximate ones
                 # share, with the approximate morphisms' tests for those helpers
        FILES="src/morphclimb/morphisms/__init__.py src/morphclimb/morphisms/base.py
               src/morphclimb/morphisms/deeper.py src/morphclimb/morphisms/wider.py
               src/morphclimb/morphisms/skip.py src/morphclimb/morphisms/_graph.py"
        NAMES=""
        TESTS="tests/test_morphisms.py tests/test_morphisms_props.py
               tests/test_approx_morphisms.py
               tests/test_search_rules.py::test_each_child_carries_n_nm_morphisms" ;;
    *) return 1 ;;
    esac
}

MODULES="seeds budget state config train rules halving forecast nash front pareto morphisms"

main() {   # (all in a function: bash reads it whole, so editing this file mid-run is safe)
if [ "${1:-}" = "" ] || [ "$1" = "list" ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,/^[^#]/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
    for m in $MODULES; do
        spec "$m"
        echo "$m: mutates $(echo $FILES)${NAMES:+ (mutants $(echo $NAMES))}"
        echo "    tests: $(echo $TESTS)"
    done
    exit 0
fi
MODULE=$1
shift
spec "$MODULE" || { echo "unknown module '$MODULE'; one of: $MODULES" >&2; exit 2; }

if ! "$PY" -c "import mutmut, sys; sys.exit(int(mutmut.__version__.split('.')[0]) < 3)" \
        2>/dev/null; then
    "$PY" -m pip install -q "$MUTMUT_SPEC"
fi

WORK=${MUTATION_DIR:-/tmp/morphclimb-mutation}/$MODULE
mkdir -p "$WORK"
cd "$WORK"
if [ "${1:-}" = "results" ]; then exec "$PY" -m mutmut results; fi
if [ "${1:-}" = "show" ]; then exec "$PY" -m mutmut show "$2"; fi
if [ $# -gt 0 ]; then NAMES="$*"; fi

# a fresh copy of the code and tests (and of mutmut's cache unless MUTATION_CACHE=keep)
rm -rf src tests pyproject.toml setup.cfg
if [ "${MUTATION_CACHE:-}" != "keep" ]; then rm -rf mutants; fi
cp -r "$ROOT/src" "$ROOT/tests" "$ROOT/pyproject.toml" .
find src tests -name __pycache__ -prune -exec rm -rf {} +
{
    echo "[mutmut]"
    echo "source_paths = src"
    echo "only_mutate ="
    for f in $FILES; do echo "    $f"; done
    echo "pytest_add_cli_args = -p no:cacheprovider -p no:randomly -q"
    echo "pytest_add_cli_args_test_selection ="
    for t in $TESTS; do echo "    $t"; done
    # torch is not fork-safe once used: fork each mutant from a clean fork server
    echo "process_isolation = forkserver"
    echo "use_git_change_detection = false"
} > setup.cfg

# shellcheck disable=SC2086
nice -n "$NICE" "$PY" -m mutmut run --max-children "$JOBS" $NAMES 2>&1 | tr '\r' '\n' \
    | grep -v -E '^\s*$|^[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]' | tail -n 5 || true

# the score: killed (or timed out) / mutants run, and the survivors
"$PY" - "$MODULE" "$NAMES" <<'PY'
import fnmatch
import subprocess
import sys

module, names = sys.argv[1], sys.argv[2].split()
out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                     capture_output=True, text=True).stdout
rows = [line.strip().rsplit(": ", 1) for line in out.splitlines() if ": " in line]
rows = [(n, s) for n, s in rows if not names or any(fnmatch.fnmatch(n, p) for p in names)]
count = {}
for _, s in rows:
    count[s] = count.get(s, 0) + 1
killed = count.get("killed", 0) + count.get("timeout", 0)
done = sum(v for k, v in count.items() if k not in ("not checked", "skipped"))
print(f"{module}: {killed} killed / {done} mutants run ({', '.join(f'{v} {k}' for k, v in sorted(count.items()))})")
for n, s in rows:
    if s not in ("killed", "timeout"):
        print(f"  {s}: {n}")
PY
}

main "$@"; exit $?
