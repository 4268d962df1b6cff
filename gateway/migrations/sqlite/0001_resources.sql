-- Resources, their versions, and one index table per search-parameter type.
-- Times are microseconds since the Unix epoch (BIGINT), the same on both dialects.

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
    resource_type TEXT   NOT NULL,
    param         TEXT   NOT NULL,
    system        TEXT,
    code          TEXT,
    text          TEXT
);
CREATE INDEX token_index_code ON token_index (resource_type, param, code, system);
CREATE INDEX token_index_key ON token_index (res_key);

CREATE TABLE string_index (
    res_key       BIGINT NOT NULL,
    resource_type TEXT   NOT NULL,
    param         TEXT   NOT NULL,
    normalized    TEXT   NOT NULL,
    exact         TEXT   NOT NULL
);
CREATE INDEX string_index_value ON string_index (resource_type, param, normalized);
CREATE INDEX string_index_key ON string_index (res_key);

CREATE TABLE date_index (
    res_key       BIGINT NOT NULL,
    resource_type TEXT   NOT NULL,
    param         TEXT   NOT NULL,
    low           BIGINT NOT NULL,
    high          BIGINT NOT NULL
);
CREATE INDEX date_index_range ON date_index (resource_type, param, low, high);
CREATE INDEX date_index_key ON date_index (res_key);

CREATE TABLE number_index (
    res_key       BIGINT NOT NULL,
    resource_type TEXT   NOT NULL,
    param         TEXT   NOT NULL,
    low           REAL NOT NULL,
    high          REAL NOT NULL
);
CREATE INDEX number_index_range ON number_index (resource_type, param, low, high);
CREATE INDEX number_index_key ON number_index (res_key);

CREATE TABLE quantity_index (
    res_key       BIGINT NOT NULL,
    resource_type TEXT   NOT NULL,
    param         TEXT   NOT NULL,
    system        TEXT,
    code          TEXT,
    unit          TEXT,
    low           REAL NOT NULL,
    high          REAL NOT NULL
);
CREATE INDEX quantity_index_range ON quantity_index (resource_type, param, low, high);
CREATE INDEX quantity_index_key ON quantity_index (res_key);

CREATE TABLE uri_index (
    res_key       BIGINT NOT NULL,
    resource_type TEXT   NOT NULL,
    param         TEXT   NOT NULL,
    uri           TEXT   NOT NULL
);
CREATE INDEX uri_index_value ON uri_index (resource_type, param, uri);
CREATE INDEX uri_index_key ON uri_index (res_key);

CREATE TABLE reference_index (
    res_key           BIGINT NOT NULL,
    resource_type     TEXT   NOT NULL,
    param             TEXT   NOT NULL,
    target_type       TEXT,
    target_id         TEXT,
    url               TEXT,
    identifier_system TEXT,
    identifier_value  TEXT
);
CREATE INDEX reference_index_target ON reference_index (resource_type, param, target_id, target_type);
CREATE INDEX reference_index_reverse ON reference_index (target_type, target_id);
CREATE INDEX reference_index_key ON reference_index (res_key);

-- The patients whose compartment holds each resource (FHIR CompartmentDefinition "patient").
CREATE TABLE patient_compartment (
    res_key    BIGINT NOT NULL,
    patient_id TEXT   NOT NULL
);
CREATE INDEX patient_compartment_patient ON patient_compartment (patient_id, res_key);
CREATE INDEX patient_compartment_key ON patient_compartment (res_key);
