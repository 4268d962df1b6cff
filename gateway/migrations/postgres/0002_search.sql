-- Full search (issue 3): composite parameters, `:text` on tokens, `:exact` on strings.

-- One row per pair of values a composite parameter takes from the same element: a token first
-- component (system, code) and a token (system2, code2), quantity (unit system2/code2/unit2,
-- low, high) or date (low, high in microseconds) second component.
CREATE TABLE composite_index (
    res_key       BIGINT NOT NULL,
    seq           INTEGER NOT NULL,
    resource_type TEXT   NOT NULL,
    param         TEXT   NOT NULL,
    system        TEXT,
    code          TEXT,
    system2       TEXT,
    code2         TEXT,
    unit2         TEXT,
    low           DOUBLE PRECISION NOT NULL,
    high          DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (res_key, seq)
);
CREATE INDEX composite_index_code ON composite_index (resource_type, param, code, code2);

-- Token text is kept normalized (lower case, no accents) for `:text`.
UPDATE token_index SET text = lower(text) WHERE text IS NOT NULL;
CREATE INDEX token_index_text ON token_index (resource_type, param, text text_pattern_ops) WHERE text IS NOT NULL;
CREATE INDEX string_index_exact ON string_index (resource_type, param, exact);
