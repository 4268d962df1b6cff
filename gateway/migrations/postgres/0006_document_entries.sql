-- A Composition's section entries, at any depth (NULLs: a reference this store cannot hold).
-- The original of a document (a Binary whose securityContext is the Composition) repeats every
-- entry, so a search matches it only for whoever may see each of them.
CREATE TABLE document_entries (
    res_key     BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    target_type TEXT,
    target_id   TEXT,
    PRIMARY KEY (res_key, seq)
);
