"""The review desk: model output -> a person's review -> approve (the answer goes out and is curated), or
reject (for good, or retry with another candidate).

The query route asks the desk three things: is there a curated answer for this question
(`curated_answer`), and after answering, record what was shown and queue it if the collection's
policy says so (`after_answer`, or `hold` for policy `required`, where the asker gets a review id
instead of the answer). Reviewers act through `approve` and `reject`.

The desk is four parts, one module each, over the state they share (`parts.py`): `lookups.py` (policy
and curated answers for the answering entry), `intake.py` (record, hold, queue, feedback), `decisions.py`
(approve, reject, retry) and `views.py` (what reviewers and askers read). Everything blocking here
(database, store, embedder) is called from a thread; `reject` is async because a retry answers the
question again through `QueryService`, the one answering path.
"""

from __future__ import annotations

from .decisions import Decisions, chunks_in_order
from .intake import Intake, answer_record
from .lookups import Lookups
from .parts import RETRY_TEMPLATE, Actor, DeskParts, detail_of, passages_of, set_policy, summary_of
from .views import Views


class ReviewDesk(Lookups, Intake, Decisions, Views):
    """The whole desk: its four parts over one `DeskParts` state."""


__all__ = [
    "RETRY_TEMPLATE",
    "Actor",
    "DeskParts",
    "ReviewDesk",
    "answer_record",
    "chunks_in_order",
    "detail_of",
    "passages_of",
    "set_policy",
    "summary_of",
]
