# Medians per label of an interleave.sh output directory, and per-round paired ratios:
#   python3 bench/scripts/analyse.py OUT [A:B ...]
# Two figures per scenario: throughput (OK calls/s; moves with everything else
# on the machine) and the server's CPU time per call (all its threads, over
# the measured window; what the build itself costs); and user rows/s where
# the scenario returns users.
import json, glob, sys, statistics as st, collections, os
out = sys.argv[1]
data = collections.defaultdict(dict)  # label -> round -> {scenario: (tput, cpu_us_per_call)}
for f in glob.glob(out + '/*.json'):
    base = os.path.basename(f)[:-5]; label, r = base.rsplit('-', 1)
    try: j = json.load(open(f))
    except Exception: continue
    data[label][int(r)] = {x['scenario']: (x['throughput_ok_per_s'], (x.get('server') or {}).get('cpu_us_per_call'), x.get('rows_per_s')) for x in j['runs']}
labels = sorted(data)
scen = sorted({s for l in data for r in data[l] for s in data[l][r]}, key=lambda s: (s != 'health', s))
def med(xs):
    xs = [x for x in xs if x is not None]
    return st.median(xs) if xs else float('nan')
print('label', 'rounds', *[f'{s}/s' for s in scen], *[f'{s}÷health' for s in scen if s != 'health'], *[f'{s} cpu µs' for s in scen], sep='\t')
for l in labels:
    rs = data[l]
    tp = {s: med(rs[r][s][0] for r in rs if s in rs[r]) for s in scen}
    ratio = {s: med(rs[r][s][0] / rs[r]['health'][0] for r in rs if s in rs[r]) for s in scen if s != 'health'}
    cpu = {s: med(rs[r][s][1] for r in rs if s in rs[r]) for s in scen}
    print(l, len(rs), *[f'{tp[s]:.0f}' for s in scen], *[f'{100*ratio[s]:.1f}%' for s in ratio], *[f'{cpu[s]:.2f}' for s in scen], sep='\t')
# user rows/s (list-users, batch-get-users), where auth-bench reports them
for l in labels:
    rs = data[l]
    for s in scen:
        rows = [rs[r][s][2] for r in rs if s in rs[r] and rs[r][s][2]]
        if rows:
            print(f'{l} {s}: median {med(rows):.0f} user rows/s (n={len(rows)})')
def q(pr):
    return f'{100*(st.median(pr)-1):+.1f}%' + (f' (quartiles {100*(st.quantiles(pr,n=4)[0]-1):+.1f}..{100*(st.quantiles(pr,n=4)[2]-1):+.1f}%)' if len(pr) > 2 else '')
# pairs A:B → per-round paired ratio of B to A, per scenario: throughput and CPU per call
for pair in sys.argv[2:]:
    a, b = pair.split(':')
    common = sorted(set(data[a]) & set(data[b]))
    for s in scen:
        both = [r for r in common if s in data[a][r] and s in data[b][r]]
        tp = [data[b][r][s][0] / data[a][r][s][0] for r in both]
        cpu = [data[b][r][s][1] / data[a][r][s][1] for r in both if data[a][r][s][1] and data[b][r][s][1]]
        cpu_d = [data[b][r][s][1] - data[a][r][s][1] for r in both if data[a][r][s][1] and data[b][r][s][1]]
        if tp:
            print(f'{b} vs {a} {s}: throughput {q(tp)}; CPU/call {q(cpu) if cpu else "n/a"}'
                  + (f', {st.median(cpu_d):+.2f} µs' if cpu_d else '') + f' (n={len(tp)})')
