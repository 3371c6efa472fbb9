#!/bin/bash
# Interleaved comparison of server builds: every round runs each label once, alternating,
# so the machine's drift hits all builds alike. Read the results with analyse.py.
# usage: interleave.sh OUTDIR ROUNDS "label=bin:ENV=V,ENV=V" ...   (server log to a pipe, like a log shipper)
# Environment: BENCH (auth-bench), SCEN (scenarios), DUR (per scenario), ARGS (more auth-bench
# arguments for every run, e.g. "--page-size 1000 --users 1100").
out=$1; rounds=$2; shift 2
mkdir -p $out
BENCH=${BENCH:-target/release/auth-bench}
SCEN=${SCEN:-health,get-me,verify,refresh}
for r in $(seq 1 $rounds); do
  for spec in "$@"; do
    label=${spec%%=*}; rest=${spec#*=}; bin=${rest%%:*}; envs=${rest#*:}
    args=()
    if [ "$envs" != "$rest" ]; then IFS=',' read -ra kv <<< "$envs"; for e in "${kv[@]}"; do args+=(--server-env "$e"); done; fi
    $BENCH --server-bin $bin --scenario $SCEN --rounds 1 --duration ${DUR:-5s} --json ${ARGS:-} "${args[@]}" > $out/$label-$r.json 2> >(cat > /dev/null)
  done
done
