-- Consent and information governance (docs/information-governance.md): what the access rules
-- read of care records and patients' wishes, derived from each current version when it is
-- written (like the index rows: rewritten with each version, emptied on delete), and the audit
-- trail.

-- Legitimate relationships: registration (Patient.generalPractitioner), encounters, episodes of
-- care and referrals. The organisation is an ODS code when the reference carried one, else the id
-- of the Organization it points at.
CREATE TABLE care_relationships (
    res_key    BIGINT  NOT NULL,
    seq        INTEGER NOT NULL,
    patient_id TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    org_ods    TEXT,
    org_id     TEXT,
    ends       BIGINT,
    PRIMARY KEY (res_key, seq)
);
CREATE INDEX care_relationships_patient ON care_relationships (patient_id, kind);

-- Patients' sharing wishes: each active patient-privacy Consent as deny rows and the exception
-- rows of the same rule; NULL conditions match anything.
CREATE TABLE consent_directives (
    res_key    BIGINT  NOT NULL,
    seq        INTEGER NOT NULL,
    patient_id TEXT    NOT NULL,
    rule       BIGINT  NOT NULL,
    effect     TEXT    NOT NULL,
    recipient  TEXT,
    source     TEXT,
    class      TEXT,
    label      TEXT,
    purpose    TEXT,
    starts     BIGINT,
    ends       BIGINT,
    PRIMARY KEY (res_key, seq)
);
CREATE INDEX consent_directives_patient ON consent_directives (patient_id);

-- A Binary with a securityContext is seen by whoever may see the resource it names: that
-- resource (NULLs when the securityContext names none this store can hold).
CREATE TABLE security_contexts (
    res_key     BIGINT NOT NULL PRIMARY KEY,
    target_type TEXT,
    target_id   TEXT
);

-- The audit trail: one AuditEvent per request, append-only, each record's hash covering the
-- previous record's hash, its sequence number, its time and its event. A batch of records is
-- one INSERT (one round trip); the trigger below keeps audit_head on the last record and the
-- patients' index (`patients`, a JSON array of ids) beside it. Two appenders that took the same
-- head collide on `seq`, and the loser starts again from the new head: one chain.
CREATE TABLE audit_log (
    seq      BIGINT NOT NULL PRIMARY KEY,
    recorded BIGINT NOT NULL,
    event    TEXT   NOT NULL,
    previous TEXT   NOT NULL,
    hash     TEXT   NOT NULL,
    patients TEXT   NOT NULL
);
CREATE TABLE audit_head (
    id   INTEGER NOT NULL PRIMARY KEY,
    seq  BIGINT  NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
-- Which patients each record is about, for "who looked at my record".
CREATE TABLE audit_patients (
    patient_id TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    PRIMARY KEY (patient_id, seq)
);

CREATE TRIGGER audit_log_appended AFTER INSERT ON audit_log
BEGIN
    UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1 AND seq < NEW.seq;
    INSERT OR IGNORE INTO audit_patients (patient_id, seq) SELECT value, NEW.seq FROM json_each(NEW.patients);
END;

-- Rows derived in Rust for versions written before this migration are filled in at start.
CREATE TABLE store_markers (
    name TEXT NOT NULL PRIMARY KEY
);
