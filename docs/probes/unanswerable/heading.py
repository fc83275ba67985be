import pickle, json, re, sys
recs = pickle.load(open(sys.argv[1], "rb"))
ds = {json.loads(l)["question"]: json.loads(l) for l in open(sys.argv[2])}
rep = {q["id"]: q for q in json.load(open(sys.argv[3]))["questions"]}
byq = {json.loads(l)["question"]: json.loads(l)["id"] for l in open(sys.argv[2])}
def lower_words(t): return len(re.findall(r"\b[a-z]{3,}\b", t))
for n in [2, 3, 4, 6]:
    U = A = 0; Ah = []
    for r in recs:
        if r["outcome"] != "answered" or not r["picks"]: continue
        best = r["picks"][0][0]
        h = (lower_words(best) < n or "....." in best or ". . . ." in best) and not re.search(r" — [^:]+: ", best)
        if not h: continue
        if ds[r["question"]]["answer"] is None: U += 1
        else: A += 1; Ah.append((r["question"][:45], rep[byq[r["question"]]]["answer_found"]))
    print(n, "caught", U, "hit", A, Ah)
