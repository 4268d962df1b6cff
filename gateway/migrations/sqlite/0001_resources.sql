-- Resources, their versions, and one index table per search-parameter type.
-- Times are microseconds since the Unix epoch (BIGINT), the same on both dialects.
-- The current version's JSON is kept once, in resources.content; its resource_versions row has
-- NULL content until a newer version supersedes it and the JSON moves there.
-- Index rows are keyed (res_key, seq): rewriting a resource's rows finds them by res_key.

CREATE TABLE resources (
    res_key       INTEGER PRIMARY KEY AUTOINCREMENT,
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    version_id    BIGINT  NOT NULL,
    last_updated  BIGINT  NOT NULL,
    deleted       INTEGER NOT NULL,
    method        TEXT    NOT NULL,
    source_org    TEXT,
    content       TEXT,
    CONSTRAINT resources_type_id UNIQUE (resource_type, id)
);
CREATE INDEX resources_type_updated ON resources (resource_type, last_updated);

CREATE TABLE resource_versions (
    sequence      INTEGER PRIMARY KEY AUTOINCREMENT,
    res_key       BIGINT  NOT NULL REFERENCES resources (res_key),
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    version_id    BIGINT  NOT NULL,
    last_updated  BIGINT  NOT NULL,
    deleted       INTEGER NOT NULL,
    method        TEXT    NOT NULL,
    source_org    TEXT,
    content       TEXT,
    CONSTRAINT resource_versions_key_version UNIQUE (res_key, version_id)
);
CREATE INDEX resource_versions_type_sequence ON resource_versions (resource_type, sequence);

CREATE TABLE token_index (
    res_key       BIGINT NOT NULL,
    seq           INTEGER NOT NULL,
    resource_type TEXT   NOT NULL,
    param         TEXT   NOT NULL,
    system        TEXT,
    code          TEXT,
    text          TEXT,
    PRIMARY KEY (res_key, seq)
) WITHOUT ROWID;
CREATE INDEX token_index_code ON token_index (resource_type, param, code, system);

CREATE TABLE string_index (
    res_key       BIGINT NOT NULL,
    seq           INTEGER NOT NULL,
    resource_type TEXT   NOT NULL,
    param         TEXT   NOT NULL,
    normalized    TEXT   NOT NULL,
    exact         TEXT   NOT NULL,
    PRIMARY KEY (res_key, seq)
) WITHOUT ROWID;
CREATE INDEX string_index_value ON string_index (resource_type, param, normalized);

CREATE TABLE date_index (
    res_key       BIGINT NOT NULL,
    seq           INTEGER NOT NULL,
    resource_type TEXT   NOT NULL,
    param         TEXT   NOT NULL,
    low           BIGINT NOT NULL,
    high          BIGINT NOT NULL,
    PRIMARY KEY (res_key, seq)
) WITHOUT ROWID;
CREATE INDEX date_index_range ON date_index (resource_type, param, low, high);

CREATE TABLE number_index (
    res_key       BIGINT NOT NULL,
    seq           INTEGER NOT NULL,
    resource_type TEXT   NOT NULL,
    param         TEXT   NOT NULL,
    low           REAL NOT NULL,
    high          REAL NOT NULL,
    PRIMARY KEY (res_key, seq)
) WITHOUT ROWID;
CREATE INDEX number_index_range ON number_index (resource_type, param, low, high);

CREATE TABLE quantity_index (
    res_key       BIGINT NOT NULL,
    seq           INTEGER NOT NULL,
    resource_type TEXT   NOT NULL,
    param         TEXT   NOT NULL,
    system        TEXT,
    code          TEXT,
    unit          TEXT,
    low           REAL NOT NULL,
    high          REAL NOT NULL,
    PRIMARY KEY (res_key, seq)
) WITHOUT ROWID;
CREATE INDEX quantity_index_range ON quantity_index (resource_type, param, low, high);

CREATE TABLE uri_index (
    res_key       BIGINT NOT NULL,
    seq           INTEGER NOT NULL,
    resource_type TEXT   NOT NULL,
    param         TEXT   NOT NULL,
    uri           TEXT   NOT NULL,
    PRIMARY KEY (res_key, seq)
) WITHOUT ROWID;
CREATE INDEX uri_index_value ON uri_index (resource_type, param, uri);

CREATE TABLE reference_index (
    res_key           BIGINT NOT NULL,
    seq               INTEGER NOT NULL,
    resource_type     TEXT   NOT NULL,
    param             TEXT   NOT NULL,
    target_type       TEXT,
    target_id         TEXT,
    url               TEXT,
    identifier_system TEXT,
    identifier_value  TEXT,
    PRIMARY KEY (res_key, seq)
) WITHOUT ROWID;
CREATE INDEX reference_index_target ON reference_index (resource_type, param, target_id, target_type);
CREATE INDEX reference_index_reverse ON reference_index (target_type, target_id);

-- The patients whose compartment holds each resource (FHIR CompartmentDefinition "patient").
CREATE TABLE patient_compartment (
    res_key    BIGINT NOT NULL,
    seq        INTEGER NOT NULL,
    patient_id TEXT   NOT NULL,
    PRIMARY KEY (res_key, seq)
) WITHOUT ROWID;
CREATE INDEX patient_compartment_patient ON patient_compartment (patient_id, res_key);
