"""Question selection shared by the benchmark scripts, so they evaluate the same questions."""


def squad_spread(examples, n, per_doc):
    """The first ``per_doc`` questions of successive paragraphs until ``n``: 100 questions over
    20 passages rather than 100 questions over the first 4 paragraphs."""
    taken, out = {}, []
    for ex in examples:
        if taken.get(ex.doc_id, 0) < per_doc:
            taken[ex.doc_id] = taken.get(ex.doc_id, 0) + 1
            out.append(ex)
            if len(out) == n:
                break
    return out
