#!/usr/bin/env bash
# Run every command of README.md and docs/*.md as written, from the repository root: what a newcomer does on a fresh
# clone (the two set-up commands, then every other command), the README's in its order, then each docs/ page's in
# name order. scripts/readme_commands.py lists them (the parser tests/test_readme.py uses) and says which are not run
# here and why; a command repeated, on one page or another, runs once. The first command that fails stops the check:
# its name, exit status and last output lines, then the time table.
#
#   bash scripts/readme_check.sh                          # what CI runs (.ci/run), on a fresh clone
#   READMECHECK_DRY=1 bash scripts/readme_check.sh        # print the plan, run nothing
#   READMECHECK_SKIP='pytest' bash scripts/readme_check.sh  # skip the commands this regex matches (marked skipped)
#   READMECHECK_REUSE_RUNS=1 bash scripts/readme_check.sh  # run although runs/ holds an earlier run's outputs
#
# Each command's output goes to the console and to runs/readme_check/NN.log (READMECHECK_LOGS moves them).
set -euo pipefail
cd "$(dirname "$0")/.."

dry=${READMECHECK_DRY:-0}
skip=${READMECHECK_SKIP:-}
logs=${READMECHECK_LOGS:-runs/readme_check}
tail_lines=40

plan=$(python3 scripts/readme_commands.py) || {
    printf '%s\n' "$plan" | awk -F'\t' '$1 == "unlisted" {print "readme_check: not listed: " $2 " (" $3 ")"}' >&2
    echo "readme_check: every command of README.md and docs/ must be in RUN or DECLARED in" \
        "scripts/readme_commands.py" >&2
    exit 1
}
# A fresh clone has no runs/. Outputs of an earlier run would stand in for this one's: a second fit writes
# last-v1.ckpt beside the old last.ckpt, and `test --ckpt_path .../last.ckpt` would evaluate the old one.
earlier=""
[ ! -d runs ] || earlier=$(find runs -mindepth 1 -maxdepth 1 ! -name readme_check | sort | paste -sd ' ')
if [ "$dry" != 1 ] && [ -n "$earlier" ] && [ "${READMECHECK_REUSE_RUNS:-0}" != 1 ]; then
    echo "readme_check: runs/ holds an earlier run's outputs ($earlier); run on a fresh clone, remove them, or set" \
        "READMECHECK_REUSE_RUNS=1 to run beside them" >&2
    exit 1
fi
[ "$dry" = 1 ] || mkdir -p "$logs"

rows=()   # one per command: "number<TAB>seconds<TAB>status<TAB>command"
total=0
number=0

table() {
    echo
    local load
    load=$(uptime | sed 's/.*,  *load/load/')
    echo "readme_check: $(nproc --all) CPUs, OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}, $load"
    printf '%3s  %8s  %-34s  %s\n' "#" "seconds" "status" "command"
    local row
    for row in "${rows[@]}"; do
        IFS=$'\t' read -r n seconds status command <<<"$row"
        printf '%3s  %8s  %-34s  %s\n' "$n" "$seconds" "$status" "$command"
    done
    printf '%3s  %8s  %s\n' "" "$total" "total of the commands run"
}

run_one() {  # run_one NUMBER COMMAND: runs it, records its time; on failure prints the table and exits 1
    local n=$1 command=$2 log start seconds status
    log=$logs/$(printf '%02d' "$n").log
    echo
    echo "readme_check [$n] \$ $command"
    start=$EPOCHREALTIME
    set +e
    # stdin from /dev/null: the loop reads the plan from stdin, and nothing here should wait for input.
    bash -c "$command" </dev/null 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    seconds=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    total=$(awk -v a="$total" -v b="$seconds" 'BEGIN { printf "%.1f", a + b }')
    if [ "$status" -ne 0 ]; then
        rows+=("$n"$'\t'"$seconds"$'\t'"FAILED (exit $status)"$'\t'"$command")
        echo
        echo "readme_check: FAILED [$n] \$ $command"
        echo "readme_check: exit status $status after $seconds s; its last $tail_lines lines (all of it: $log):"
        # Progress bars redraw with carriage returns: each redraw counts as a line, so the tail shows the last state.
        tr '\r' '\n' <"$log" | grep -v '^[[:space:]]*$' | tail -n "$tail_lines" | sed 's/^/  | /' || true
        table
        exit 1
    fi
    rows+=("$n"$'\t'"$seconds"$'\t'"ok"$'\t'"$command")
}

while IFS=$'\t' read -r kind command note; do
    number=$((number + 1))
    case $kind in
        same) rows+=("$number"$'\t'"-"$'\t'"$note"$'\t'"$command") ;;
        declared) rows+=("$number"$'\t'"-"$'\t'"not run (see below)"$'\t'"$command") ;;
        run)
            if [ "$dry" = 1 ]; then
                rows+=("$number"$'\t'"-"$'\t'"would run"$'\t'"$command")
            elif [ -n "$skip" ] && [[ $command =~ $skip ]]; then
                rows+=("$number"$'\t'"-"$'\t'"SKIPPED (READMECHECK_SKIP)"$'\t'"$command")
            else
                run_one "$number" "$command"
            fi
            ;;
    esac
done <<<"$plan"

table
echo
echo "not run here, and why (scripts/readme_commands.py, DECLARED):"
printf '%s\n' "$plan" | awk -F'\t' '$1 == "declared" {print "  " $2 "\n      " $3}'
if [ "$dry" = 1 ]; then
    echo "readme_check: dry run (READMECHECK_DRY=1), nothing was run"
elif [ -n "$skip" ]; then
    echo "readme_check: passed, with the commands matching READMECHECK_SKIP='$skip' skipped: not a full check"
else
    echo "readme_check: passed: every command of README.md and docs/ listed to run ran as written"
fi
