//! The requesters: clinicians of every kind of organisation and purpose, systems, and patients,
//! each with an HTTP client carrying its certificate and token.

use serde_json::json;
use tests::{TEST_AUDIENCE, TestApp, https_client_with_token};

use super::fixture::{A81001, A81002, A81003, A81004, Certificates, RXA, RXB, RXC, World, X09};
use super::oracle::{Purpose, Who};

pub struct Requester {
    pub name: String,
    pub who: Who,
    pub client: reqwest::Client,
}

fn clinician(app: &TestApp, certificates: &Certificates, org: &'static str, purpose: Purpose, self_claim: bool) -> Requester {
    let mut claims = json!({
        "scope": "user/*.rs",
        "requesting_organization": org,
        "requesting_practitioner_role": "R8000",
        "purpose_of_use": purpose.code(),
    });
    if !matches!(purpose, Purpose::Treat) || self_claim {
        claims["reason"] = json!("leak matrix: seen in clinic today");
    }
    if self_claim {
        claims["legitimate_relationship"] = json!("self-claimed");
    }
    let token = app.issuers.clinician.mint(TEST_AUDIENCE, &format!("clinician-{}", org.to_lowercase()), 7200, &claims);
    let mut name = format!("clinician {org} {}", purpose.code());
    if self_claim {
        name.push_str(" self-claimed");
    }
    Requester {
        name,
        who: Who::Clinician { org, purpose, self_claim },
        client: https_client_with_token(&app.pki, Some(certificates.of(org)), Some(&token)),
    }
}

fn system(app: &TestApp, certificates: &Certificates, org: &'static str) -> Requester {
    let token = app.issuers.system_token(org, "system/*.rs");
    let files = if org == A81001 { &certificates.a81001_system } else { certificates.of(org) };
    Requester {
        name: format!("system {org}"),
        who: Who::System { org },
        client: https_client_with_token(&app.pki, Some(files), Some(&token)),
    }
}

/// An analyst of RXB's research unit (a clinician token, HRESCH) or A81001's planning service
/// (a system token, HOPERAT), each through the certificate registered for that purpose.
fn researcher(app: &TestApp, certificates: &Certificates, org: &'static str, purpose: &'static str) -> Requester {
    let (files, token) = if org == RXB {
        let claims = json!({"scope": "user/*.rs", "requesting_organization": org, "purpose_of_use": purpose});
        (&certificates.rxb_research, app.issuers.clinician.mint(TEST_AUDIENCE, "analyst-rxb", 7200, &claims))
    } else {
        let claims = json!({"scope": "system/*.rs", "requesting_organization": org, "purpose_of_use": purpose});
        (&certificates.a81001_planning, app.issuers.system.mint(TEST_AUDIENCE, "planning-a81001", 7200, &claims))
    };
    Requester {
        name: format!("researcher {org} {purpose}"),
        who: Who::Researcher { org, purpose: Purpose::Secondary(purpose) },
        client: https_client_with_token(&app.pki, Some(files), Some(&token)),
    }
}

/// A P9 patient, through the portal's certificate or (as the harness allows) without one.
fn patient(app: &TestApp, label: &str, nhs: &str, through_portal: bool) -> Requester {
    let token = app.issuers.patient_token(nhs, "P9");
    let certificate = through_portal.then_some(&app.pki.portal);
    Requester {
        name: format!("patient {label}"),
        who: Who::Patient { nhs: nhs.to_owned() },
        client: https_client_with_token(&app.pki, certificate, Some(&token)),
    }
}

pub fn all(app: &TestApp, certificates: &Certificates, world: &World) -> Vec<Requester> {
    let mut requesters: Vec<Requester> = [A81001, A81002, A81003, A81004, RXA, RXB, RXC]
        .into_iter()
        .map(|org| clinician(app, certificates, org, Purpose::Treat, false))
        .collect();
    requesters.extend([
        clinician(app, certificates, A81003, Purpose::Emergency("ETREAT"), false),
        clinician(app, certificates, RXC, Purpose::Emergency("BTG"), false),
        clinician(app, certificates, A81003, Purpose::Treat, true),
        clinician(app, certificates, A81002, Purpose::Secondary("HRESCH"), false),
    ]);
    requesters.extend([RXA, RXB, A81001, X09].into_iter().map(|org| system(app, certificates, org)));
    requesters.extend([researcher(app, certificates, RXB, "HRESCH"), researcher(app, certificates, A81001, "HOPERAT")]);
    for (key, through_portal) in [("P0", true), ("P1", true), ("P5", false), ("P10", true)] {
        let fixture = world.patient(key);
        requesters.push(patient(app, key, &fixture.nhs, through_portal));
    }
    requesters.push(patient(app, "without a record", &world.unknown_nhs, false));
    requesters
}
