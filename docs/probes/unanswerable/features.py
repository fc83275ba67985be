import os
import pickle, json, re, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from analyze import feats
import numpy as np
recs = pickle.load(open(sys.argv[1], "rb"))
ds = {json.loads(l)["question"]: json.loads(l) for l in open(sys.argv[2])}
DIG = re.compile(r"\d"); YEAR = re.compile(r"\b(1[5-9]|20)\d\d\b|\d{1,2}/\d{1,2}/\d{2,4}|January|February|March|April|May|June|July|August|September|October|November|December")
rows = []
for r in recs:
    it = ds[r["question"]]; f = feats(r)
    best = r["picks"][0][0] if r["picks"] else ""
    ctxsim = [1.0 if a else c for w, a, b, c, d in f] or [1.0]
    bsim = [1.0 if b else d for w, a, b, c, d in f] or [1.0]
    w = r["wants"]
    kind = 0
    if w == "number" and not DIG.search(best): kind = 1
    if w == "date" and not YEAR.search(best): kind = 1
    rows.append(dict(q=r["question"], unans=it["answer"] is None, out=r["outcome"], wants=w,
        f1=min(ctxsim), f2=min(bsim), f3=sum(s < 0.35 for s in ctxsim), f4=kind, f5=float(np.mean(bsim)), sem=r["picks"][0][1] if r["picks"] else 0, ab=r["answerability"]))
def auc(key, sign):
    u = [sign*x[key] for x in rows if x["unans"]]; a = [sign*x[key] for x in rows if not x["unans"]]
    return np.mean([(ui > ai) + 0.5*(ui == ai) for ui in u for ai in a])
for k, s in [("f1", -1), ("f2", -1), ("f3", 1), ("f4", 1), ("f5", -1), ("sem", -1), ("ab", -1)]:
    print(k, "AUC", round(auc(k, s), 3))
ans_ans = [x for x in rows if not x["unans"] and x["out"] == "answered"]
un_ans = [x for x in rows if x["unans"] and x["out"] == "answered"]
print("answerable answered", len(ans_ans), "unans answered", len(un_ans))
for k, s, ts in [("f1", -1, [0.2,0.25,0.3,0.35]), ("f2", -1, [0.1,0.15,0.2]), ("f3", 1, [1,2,3]), ("f5", -1, [0.3,0.4,0.5,0.6])]:
    for t in ts:
        hit = (lambda x: x[k] < t) if s < 0 else (lambda x: x[k] >= t)
        print(k, t, "unans newly caught", sum(map(hit, un_ans)), "answerable newly low", sum(map(hit, ans_ans)))
print("f4 kind", sum(x["f4"] for x in un_ans), sum(x["f4"] for x in ans_ans), [x["q"] for x in ans_ans if x["f4"]])
print([ (x["q"][:50], x["wants"]) for x in un_ans])
