# Medians per label of an interleave.sh output directory, and per-round paired ratios:
#   python3 bench/scripts/analyse.py OUT [A B [A:B ...]]
import json, glob, sys, statistics as st, collections, os
out = sys.argv[1]
data = collections.defaultdict(dict)  # label -> round -> {scenario: (tput, p99)}
for f in glob.glob(out + '/*.json'):
    base = os.path.basename(f)[:-5]; label, r = base.rsplit('-', 1)
    try: j = json.load(open(f))
    except Exception: continue
    data[label][int(r)] = {x['scenario']: (x['throughput_ok_per_s'], x['latency_ms'].get('p99') if isinstance(x['latency_ms'], dict) else None) for x in j['runs']}
labels = sorted(data)
scen = sorted({s for l in data for r in data[l] for s in data[l][r]}, key=lambda s: (s != 'health', s))
print('label', 'rounds', *[f'{s}/s' for s in scen], *[f'{s}÷health' for s in scen if s != 'health'], sep='\t')
for l in labels:
    rs = data[l]
    tp = {s: st.median(rs[r][s][0] for r in rs if s in rs[r]) for s in scen}
    ratio = {s: st.median(rs[r][s][0] / rs[r]['health'][0] for r in rs if s in rs[r]) for s in scen if s != 'health'}
    print(l, len(rs), *[f'{tp[s]:.0f}' for s in scen], *[f'{100*ratio[s]:.1f}%' for s in ratio], sep='\t')
# paired ratios between labels for the same round
if len(sys.argv) > 3:
    a, b = sys.argv[2], sys.argv[3]
    common = sorted(set(data[a]) & set(data[b]))
    for s in scen:
        pr = [data[b][r][s][0] / data[a][r][s][0] for r in common if s in data[a][r] and s in data[b][r]]
        print(f'{b}/{a} {s}: median paired {100*(st.median(pr)-1):+.1f}% over {len(pr)} rounds')
# pairs given as extra args a:b → per-round paired ratio of b to a, per scenario
for pair in sys.argv[4:]:
    a, b = pair.split(':')
    common = sorted(set(data[a]) & set(data[b]))
    for s in scen:
        pr = [data[b][r][s][0] / data[a][r][s][0] for r in common if s in data[a][r] and s in data[b][r]]
        if pr:
            print(f'{b}/{a} {s}: median paired {100*(st.median(pr)-1):+.1f}% (n={len(pr)}, quartiles {100*(st.quantiles(pr,n=4)[0]-1):+.1f}..{100*(st.quantiles(pr,n=4)[2]-1):+.1f}%)' if len(pr)>1 else '')
