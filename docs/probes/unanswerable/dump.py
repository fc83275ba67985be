"""Run `ragkb eval qa ...` with every decide() call recorded to $DUMP (pickle)."""
import os, pickle, sys
import server.answering.service as svc
from server.answering import outcomes

records = []
orig = svc.decide

def wrapped(question, evidence, contexts, **kw):
    d = orig(question, evidence, contexts, **kw)
    records.append({
        "question": question,
        "picks": [(p.text, p.semantic, p.lexical, p.fact, p.score, p.context, p.chunk_id) for p in evidence.picks],
        "wants": evidence.wants, "confidence": evidence.confidence, "coverage": evidence.coverage,
        "answerability": evidence.answerability, "support": dict(evidence.support),
        "contexts": [(c.chunk_id, c.text, dict(c.metadata) if hasattr(c, "metadata") else {}) for c in contexts],
        "outcome": d.outcome.value, "missing": d.missing,
    })
    return d

svc.decide = wrapped
import atexit
atexit.register(lambda: pickle.dump(records, open(os.environ["DUMP"], "wb")))
from ragkb.cli import app
sys.argv = ["ragkb", *sys.argv[1:]]
app()
