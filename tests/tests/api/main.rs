//! The black-box suite: one binary, every test against a real gateway over mutual TLS, on the
//! backend `HIE_TEST_DATABASE` names (the test script runs it on SQLite and on PostgreSQL).

mod access_properties;
mod architecture;
mod audit;
mod authentication;
mod bundles;
mod cache;
mod crud;
mod discharge;
mod examples;
mod faults;
mod governance;
mod gp_extracts;
mod hl7v2;
mod labels;
mod leak_matrix;
mod metadata;
mod negotiation;
mod openid_provider;
mod ops;
mod portal;
mod published_fhir;
mod rate_limits;
mod resource_types;
mod responses;
mod search;
mod search_conformance;
mod secondary_use;
mod sharing_wishes;
mod tokens;
mod validation;
