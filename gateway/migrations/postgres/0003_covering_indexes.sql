-- Index rows carry their resource's key in the index itself, so counting matches
-- (`_total=accurate`) and the semi-joins of a search are index-only scans: no visit to the
-- table's pages. (SQLite's WITHOUT ROWID indexes hold the key already.)
DROP INDEX token_index_code;
CREATE INDEX token_index_code ON token_index (resource_type, param, code, system) INCLUDE (res_key);
DROP INDEX string_index_value;
CREATE INDEX string_index_value ON string_index (resource_type, param, normalized text_pattern_ops) INCLUDE (res_key);
DROP INDEX date_index_range;
CREATE INDEX date_index_range ON date_index (resource_type, param, low, high) INCLUDE (res_key);
DROP INDEX number_index_range;
CREATE INDEX number_index_range ON number_index (resource_type, param, low, high) INCLUDE (res_key);
DROP INDEX quantity_index_range;
CREATE INDEX quantity_index_range ON quantity_index (resource_type, param, low, high) INCLUDE (res_key, system, code, unit);
DROP INDEX uri_index_value;
CREATE INDEX uri_index_value ON uri_index (resource_type, param, uri text_pattern_ops) INCLUDE (res_key);
DROP INDEX reference_index_target;
CREATE INDEX reference_index_target ON reference_index (resource_type, param, target_id, target_type) INCLUDE (res_key);
DROP INDEX composite_index_code;
CREATE INDEX composite_index_code ON composite_index (resource_type, param, code, code2) INCLUDE (res_key, system, system2, low, high);
