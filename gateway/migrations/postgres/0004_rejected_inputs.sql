-- Inputs the gateway refused (HL7 v2 messages, later extract rows and documents), kept with the
-- reason so nothing sent is lost and a fixed input can be replayed.
CREATE TABLE rejected_inputs (
    id          BIGSERIAL PRIMARY KEY,
    received_at BIGINT    NOT NULL,
    channel     TEXT      NOT NULL,
    format      TEXT      NOT NULL,
    -- ODS code of the authenticated client that posted it (HTTPS); NULL for MLLP and files,
    -- whose publisher comes from MSH-4. A replay publishes as this organisation again.
    publisher   TEXT,
    sender      TEXT,
    control_id  TEXT,
    location    TEXT,
    reason      TEXT      NOT NULL,
    content     BYTEA     NOT NULL
);
CREATE INDEX rejected_inputs_received ON rejected_inputs (received_at);
