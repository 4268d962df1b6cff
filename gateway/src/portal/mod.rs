//! The patient portal at `/portal/`: a backend-for-frontend. People sign in at the configured
//! patient issuer (OpenID Connect, [`oidc`]); the browser only ever holds an opaque session
//! cookie, while the access token stays server-side ([`sessions`]). Each page is read through the
//! same enforcement point and self-access filter as the FHIR API, as that patient: the portal
//! has no way to data that a patient app with the same token would not have.

mod oidc;
mod page;
pub mod sessions;

use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpRequest, HttpResponse, web};
use consent::{Principal, Requester};
use fhir_models::ResourceType;
use fhir_models::interaction::Interaction;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use oidc::SignIn;
use sessions::{Kind, SessionStore};

use crate::error::ApiError;
use crate::fhir::{FhirService, Handling, SearchScope};
use crate::http::AppState;

/// Host-only, secure, script-proof cookies (`__Host-` makes the browser insist on all three).
const SESSION_COOKIE: &str = "__Host-hie-portal";
const SIGN_IN_COOKIE: &str = "__Host-hie-portal-sign-in";
/// A sign-in not finished within this long must start again.
const SIGN_IN_TTL: Duration = Duration::from_secs(600);

/// The record's sections, in page order: element id, resource type, heading.
const SECTIONS: [(&str, &str); 9] = [
    ("Encounter", "Hospital visits and admissions"),
    ("Condition", "Conditions"),
    ("AllergyIntolerance", "Allergies"),
    ("MedicationStatement", "Medicines"),
    ("MedicationRequest", "Prescriptions"),
    ("Immunization", "Vaccinations"),
    ("Observation", "Test results and measurements"),
    ("DiagnosticReport", "Reports"),
    ("DocumentReference", "Letters and documents"),
];
/// Entries shown per section (the most recent first).
const SECTION_ROWS: &str = "50";

pub struct Portal {
    sign_in: Option<SignIn>,
    pub sessions: SessionStore,
    idle: Duration,
    content_security_policy: String,
}

#[derive(Serialize, Deserialize)]
struct Session {
    access_token: String,
    /// The form token that must come back with a sign-out.
    csrf: String,
    /// Unix time after which the access token is no longer offered.
    expires_at: i64,
}

impl Portal {
    pub fn new(sign_in: Option<SignIn>, idle: Duration) -> Self {
        if let Some(sign_in) = &sign_in {
            tracing::info!(redirect_url = sign_in.redirect_url(), "patient portal sign-in configured");
        }
        Self { sign_in, sessions: SessionStore::new(), idle, content_security_policy: page::content_security_policy() }
    }
}

/// The portal's routes, with its security headers on every answer.
pub fn configure(config: &mut web::ServiceConfig, content_security_policy: &str) {
    let headers = DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, content_security_policy.to_owned()))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // `same-origin`, not `no-referrer`: with no referrer Chromium sends `Origin: null` on the
        // sign-out form, and the origin check below needs the real one.
        .add((header::REFERRER_POLICY, "same-origin"))
        .add((header::CACHE_CONTROL, "no-store"))
        .add((header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"))
        .add(("Cross-Origin-Opener-Policy", "same-origin"))
        .add(("Permissions-Policy", "camera=(), microphone=(), geolocation=()"));
    config.service(
        web::resource("/portal")
            .route(web::get().to(|| async { HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "/portal/")).finish() })),
    );
    // Malformed query strings and forms get a portal page too, not actix's plain-text answer.
    let bad_request = |error: actix_web::Error| {
        let response = html(StatusCode::BAD_REQUEST, page::problem("Something was wrong with that request", "Please start again."));
        actix_web::error::InternalError::from_response(error, response).into()
    };
    config.service(
        web::scope("/portal")
            .wrap(headers)
            .app_data(web::QueryConfig::default().error_handler(move |error, _| bad_request(error.into())))
            .app_data(web::FormConfig::default().error_handler(move |error, _| bad_request(error.into())))
            .service(web::resource("/").route(web::get().to(home)))
            .service(web::resource("/login").route(web::get().to(login)))
            .service(web::resource("/callback").route(web::get().to(callback)))
            .service(web::resource("/logout").route(web::post().to(logout)))
            .service(web::resource("/sharing").route(web::post().to(add_wish)))
            .service(web::resource("/sharing/withdraw").route(web::post().to(withdraw_wish)))
            .default_service(web::to(|| async { html(StatusCode::NOT_FOUND, page::problem("Page not found", "There is no such page.")) })),
    );
}

impl Portal {
    pub fn content_security_policy(&self) -> &str {
        &self.content_security_policy
    }
}

fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status).content_type("text/html; charset=utf-8").body(body)
}

fn cookie(name: &str, value: String, max_age: Duration) -> Cookie<'static> {
    Cookie::build(name.to_owned(), value)
        .path("/")
        .secure(true)
        .http_only(true)
        // Lax: sent on the provider's top-level redirect back to the callback, never on a
        // cross-site POST (so a sign-out cannot be forged from another site).
        .same_site(SameSite::Lax)
        .max_age(actix_web::cookie::time::Duration::seconds(max_age.as_secs() as i64))
        .finish()
}

fn expired(name: &str) -> Cookie<'static> {
    cookie(name, String::new(), Duration::ZERO)
}

fn cookie_value(request: &HttpRequest, name: &str) -> Option<String> {
    request.cookie(name).map(|cookie| cookie.value().to_owned()).filter(|value| !value.is_empty())
}

/// The session of whoever is signed in, with the patient its access token speaks for; or the
/// page to answer with (sign in, session ended, try again).
async fn signed_in(request: &HttpRequest, state: &AppState) -> Result<(Session, Principal), HttpResponse> {
    let portal = &state.portal;
    let Some(id) = cookie_value(request, SESSION_COOKIE) else { return Err(html(StatusCode::OK, page::sign_in(None))) };
    let ended = || {
        HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .cookie(expired(SESSION_COOKIE))
            .body(page::sign_in(Some("Your session has ended. Please sign in again.")))
    };
    let Some(session) = portal.sessions.get::<Session>(Kind::Session, &id).await else { return Err(ended()) };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let authorization = format!("Bearer {}", session.access_token);
    let principal = match state.authenticator.authenticate(Some(authorization.as_bytes()), None).await {
        Ok(Some(principal @ Principal::Patient(..))) if now < session.expires_at => principal,
        Ok(_) | Err(_) => {
            let _ = portal.sessions.remove(Kind::Session, &id).await;
            return Err(ended());
        }
    };
    // Sliding idle expiry, never past the access token's own.
    let ttl = portal.idle.min(Duration::from_secs((session.expires_at - now).max(1) as u64));
    if portal.sessions.put(Kind::Session, &id, &session, ttl).await.is_err() {
        return Err(html(StatusCode::SERVICE_UNAVAILABLE, page::problem("Try again later", "Sessions cannot be kept just now.")));
    }
    crate::audit::record_requester(&Requester::anonymous().with_principal(principal.clone()));
    Ok((session, principal))
}

/// The record of whoever is signed in, or the sign-in page.
async fn home(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (session, principal) = match signed_in(&request, &state).await {
        Ok(signed_in) => signed_in,
        Err(page) => return page,
    };
    let requester = Requester::anonymous().with_principal(principal);
    let record = async {
        let (patients, sections) = read_record(&state.fhir, requester.clone()).await?;
        let governance = read_governance(&state, &requester).await?;
        Ok::<_, ApiError>((patients, sections, governance))
    };
    match record.await {
        Ok((patients, sections, governance)) => html(StatusCode::OK, page::record(&patients, &sections, &governance, &session.csrf, None)),
        Err(error) => {
            let message = error.outcome().issue.first().and_then(|issue| issue.diagnostics.clone()).unwrap_or_else(|| error.to_string());
            html(error.status(), page::record(&[], &[], &page::Governance::default(), &session.csrf, Some(&message)))
        }
    }
}

/// Who looked at the patient's record (the audit trail, as the patient sees it) and their
/// sharing choices (their patient-privacy Consents, read as a FHIR search by them).
async fn read_governance(state: &AppState, requester: &Requester) -> Result<page::Governance, ApiError> {
    let Some(Principal::Patient(patient, scopes)) = &requester.principal else { return Ok(page::Governance::default()) };
    let own = crate::fhir::access::patients_with_nhs_number(&state.fhir, &patient.nhs_number.to_string()).await?;
    let access = state.audit.about(&own, None, 20).await?.iter().map(|(_, event)| crate::audit::for_patient(event, &own)).collect();
    let consent_type = ResourceType::parse("Consent").map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))?;
    let permit = crate::enforce::authorize(requester.clone(), Interaction::SearchType, Some(consent_type))?;
    let params = [("status".to_owned(), "active".to_owned()), ("_count".to_owned(), "50".to_owned())];
    let response = crate::fhir::search(&state.fhir, &permit, SearchScope::Type(consent_type), &params, Handling::Strict).await?;
    let crate::fhir::Body::Json(bytes) = response.body else { return Ok(page::Governance::default()) };
    let bundle: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::Internal(e.into()))?;
    let wishes = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| entry["resource"].clone())
        .filter(|consent| consent["resourceType"] == "Consent" && consent::directives::is_privacy_consent(consent))
        .collect();
    let can_change_wishes = scopes.allows(consent::ScopeContext::Patient, Interaction::Create, Some(consent_type))
        && scopes.allows(consent::ScopeContext::Patient, Interaction::Delete, Some(consent_type));
    Ok(page::Governance { access, wishes, can_change_wishes })
}

#[derive(Deserialize)]
struct WishForm {
    csrf: String,
    wish: String,
    #[serde(default)]
    organisation: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize)]
struct WithdrawForm {
    csrf: String,
    consent: String,
}

/// A form post from a signed-in page of this site, with the session's form token.
async fn signed_in_form(request: &HttpRequest, state: &AppState, csrf: &str) -> Result<(Session, Principal), HttpResponse> {
    if let Some(origin) = request.headers().get(header::ORIGIN)
        && !same_origin(request, origin)
    {
        return Err(html(StatusCode::FORBIDDEN, page::problem("Not changed", "The form did not come from this site.")));
    }
    let (session, principal) = signed_in(request, state).await?;
    if session.csrf != csrf {
        return Err(html(StatusCode::FORBIDDEN, page::problem("Not changed", "The form has expired; reload the page.")));
    }
    Ok((session, principal))
}

/// Save a sharing choice: a patient-privacy Consent written as the patient, through the API's
/// own write path and checks.
async fn add_wish(request: HttpRequest, form: web::Form<WishForm>, state: web::Data<AppState>) -> HttpResponse {
    let (_, principal) = match signed_in_form(&request, &state, &form.csrf).await {
        Ok(signed_in) => signed_in,
        Err(page) => return page,
    };
    let Principal::Patient(patient, _) = &principal else {
        return html(StatusCode::FORBIDDEN, page::problem("Not changed", "Sign in as a patient."));
    };
    let save = async {
        let own = crate::fhir::access::patients_with_nhs_number(&state.fhir, &patient.nhs_number.to_string()).await?;
        if own.is_empty() {
            return Err(ApiError::invalid(fhir_models::outcome::IssueType::NotFound, "no record here carries your NHS number yet"));
        }
        // Every record that carries the NHS number gets the choice: the person's wish is theirs,
        // whichever record a trust or practice filed.
        let consent_type = ResourceType::parse("Consent").map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))?;
        let requester = Requester::anonymous().with_principal(principal.clone());
        let permit = crate::enforce::authorize(requester, Interaction::Create, Some(consent_type))?;
        for patient_id in &own {
            let consent =
                wish_consent(patient_id, &form).map_err(|reason| ApiError::invalid(fhir_models::outcome::IssueType::Value, reason))?;
            let bytes = serde_json::to_vec(&consent).map_err(|e| ApiError::Internal(e.into()))?;
            let validated = crate::fhir::prepare(&state.fhir, bytes, Some(consent_type)).await?;
            crate::fhir::create(&state.fhir, &permit, validated, None).await?;
        }
        Ok(())
    };
    match save.await {
        Ok(()) => HttpResponse::SeeOther().insert_header((header::LOCATION, "/portal/#sharing")).finish(),
        Err(error) => changed_nothing(&error),
    }
}

/// Withdraw a sharing choice (delete the Consent, as the patient: only their own).
async fn withdraw_wish(request: HttpRequest, form: web::Form<WithdrawForm>, state: web::Data<AppState>) -> HttpResponse {
    let (_, principal) = match signed_in_form(&request, &state, &form.csrf).await {
        Ok(signed_in) => signed_in,
        Err(page) => return page,
    };
    let withdraw = async {
        let consent_type = ResourceType::parse("Consent").map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))?;
        let permit = crate::enforce::authorize(Requester::anonymous().with_principal(principal), Interaction::Delete, Some(consent_type))?;
        crate::fhir::delete(&state.fhir, &permit, consent_type, &form.consent).await?;
        Ok::<_, ApiError>(())
    };
    match withdraw.await {
        Ok(()) => HttpResponse::SeeOther().insert_header((header::LOCATION, "/portal/#sharing")).finish(),
        Err(error) => changed_nothing(&error),
    }
}

fn changed_nothing(error: &ApiError) -> HttpResponse {
    let message = error.outcome().issue.first().and_then(|issue| issue.diagnostics.clone()).unwrap_or_else(|| error.to_string());
    html(error.status(), page::problem("Your choice was not saved", &message))
}

/// The Consent a form asks for, in the shapes of docs/information-governance.md.
fn wish_consent(patient_id: &str, form: &WishForm) -> Result<Value, String> {
    use serde_json::json;
    let organisation = || {
        let code = form.organisation.trim().to_uppercase();
        fhir_models::OdsCode::parse(&code)
            .map(|ods| ods.to_string())
            .map_err(|_| format!("{:?} is not an organisation code (ODS)", form.organisation.trim()))
    };
    let actor = |role: &str, ods: String| {
        json!([{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": role}]},
                "reference": {"identifier": {"system": fhir_models::system::ODS_ORGANIZATION_CODE, "value": ods}}}])
    };
    let provision = match form.wish.as_str() {
        "nothing" => json!({"type": "deny"}),
        "not-with" => json!({"type": "permit", "provision": [{"type": "deny", "actor": actor("IRCP", organisation()?)}]}),
        "not-from" => json!({"type": "permit", "provision": [{"type": "deny", "actor": actor("AUT", organisation()?)}]}),
        "only-with" => json!({"type": "deny", "provision": [{"type": "permit", "actor": actor("IRCP", organisation()?)}]}),
        "keep-back" => {
            let (_, _, types) = page::KINDS.iter().find(|(key, _, _)| *key == form.kind).ok_or("choose a kind of record to keep back")?;
            let class: Vec<Value> =
                types.iter().map(|code| json!({"system": "http://hl7.org/fhir/resource-types", "code": code})).collect();
            json!({"type": "permit", "provision": [{"type": "deny", "class": class}]})
        }
        _ => return Err("choose what to change".into()),
    };
    Ok(json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": consent::directives::CONSENT_SCOPE_SYSTEM, "code": consent::directives::PATIENT_PRIVACY}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-6", "display": "Consent Document"}]}],
        "patient": {"reference": format!("Patient/{patient_id}")},
        "dateTime": fhir_models::datetime::format_instant(time::OffsetDateTime::now_utc()),
        "provision": provision
    }))
}

/// The signed-in patient's own record, section by section, each read as a FHIR search by that
/// patient (so the self-access filter and every policy rule apply exactly as on the API).
async fn read_record(fhir: &FhirService, requester: Requester) -> Result<(Vec<Value>, Vec<page::Section>), ApiError> {
    let search = async |type_name: &str, params: &[(&str, &str)]| -> Result<Vec<Value>, ApiError> {
        let resource_type = ResourceType::parse(type_name).map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))?;
        let permit = crate::enforce::authorize(requester.clone(), Interaction::SearchType, Some(resource_type))?;
        let params: Vec<(String, String)> = params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let response = crate::fhir::search(fhir, &permit, SearchScope::Type(resource_type), &params, Handling::Strict).await?;
        let crate::fhir::Body::Json(bytes) = response.body else { return Ok(Vec::new()) };
        let bundle: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::Internal(e.into()))?;
        Ok(bundle["entry"]
            .as_array()
            .map(|entries| {
                entries.iter().filter(|entry| entry["search"]["mode"] != "outcome").map(|entry| entry["resource"].clone()).collect()
            })
            .unwrap_or_default())
    };
    let patients = search("Patient", &[("_count", "10")]).await?;
    let mut sections = Vec::with_capacity(SECTIONS.len());
    for (id, title) in SECTIONS {
        let resources = search(id, &[("_count", SECTION_ROWS), ("_sort", "-_lastUpdated")]).await?;
        sections.push(page::Section { id, title, resources });
    }
    Ok((patients, sections))
}

/// Start a sign-in: remember its state, nonce and PKCE verifier, send the browser to the issuer.
async fn login(state: web::Data<AppState>) -> HttpResponse {
    let portal = &state.portal;
    let Some(sign_in) = &portal.sign_in else {
        return html(
            StatusCode::NOT_FOUND,
            page::problem("Sign-in is not set up", "This gateway has no patient sign-in configured ([portal] issuer)."),
        );
    };
    let (url, pending) = match sign_in.start().await {
        Ok(started) => started,
        Err(error) => return sign_in_failed(&error),
    };
    let id = SessionStore::new_id();
    if portal.sessions.put(Kind::Pending, &id, &pending, SIGN_IN_TTL).await.is_err() {
        return html(StatusCode::SERVICE_UNAVAILABLE, page::problem("Try again later", "Sessions cannot be kept just now."));
    }
    HttpResponse::SeeOther().insert_header((header::LOCATION, url)).cookie(cookie(SIGN_IN_COOKIE, id, SIGN_IN_TTL)).finish()
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The issuer sends the browser back here: check it is the sign-in this browser started, buy
/// the tokens, check the access token as the API would, and start a session.
async fn callback(request: HttpRequest, query: web::Query<CallbackQuery>, state: web::Data<AppState>) -> HttpResponse {
    let portal = &state.portal;
    let Some(sign_in) = &portal.sign_in else {
        return html(StatusCode::NOT_FOUND, page::problem("Page not found", "There is no such page."));
    };
    let query = query.into_inner();
    let restart = |message: &str| {
        HttpResponse::build(StatusCode::BAD_REQUEST)
            .content_type("text/html; charset=utf-8")
            .cookie(expired(SIGN_IN_COOKIE))
            .body(page::problem("Sign-in did not finish", message))
    };
    // Taken, so a callback can be used once only, whatever happens next.
    let pending = match cookie_value(&request, SIGN_IN_COOKIE) {
        Some(id) => portal.sessions.take::<oidc::PendingSignIn>(Kind::Pending, &id).await,
        None => None,
    };
    let Some(pending) = pending else {
        return restart("This sign-in was not started in this browser, or it took too long. Please sign in again.");
    };
    if query.state.as_deref() != Some(pending.state.as_str()) {
        return restart("This sign-in answer does not belong to the sign-in this browser started. Please sign in again.");
    }
    if let Some(error) = query.error {
        let message = match error.as_str() {
            "access_denied" => "Sign-in was cancelled.".to_owned(),
            _ => "The sign-in service could not sign you in. Please try again.".to_owned(),
        };
        return restart(&message);
    }
    let Some(code) = query.code else { return restart("The sign-in service sent no authorization code. Please sign in again.") };
    let signed_in = match sign_in.finish(pending, code).await {
        Ok(signed_in) => signed_in,
        Err(error) => return sign_in_failed(&error),
    };
    // The access token must be one the API itself accepts, for the person the ID token names.
    let authorization = format!("Bearer {}", signed_in.access_token);
    match state.authenticator.authenticate(Some(authorization.as_bytes()), None).await {
        Ok(Some(Principal::Patient(patient, _))) if patient.subject == signed_in.subject => {}
        Ok(_) => {
            tracing::warn!("portal: the access token does not speak for the person the ID token names");
            return restart("The sign-in service's tokens do not agree about who you are, so you have not been signed in.");
        }
        Err(error) => {
            tracing::info!(reason = %error, "portal: access token refused");
            return restart("The sign-in service issued a token this service cannot accept, so you have not been signed in.");
        }
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let lifetime = signed_in.expires_in.unwrap_or(portal.idle);
    let session =
        Session { access_token: signed_in.access_token, csrf: SessionStore::new_id(), expires_at: now + lifetime.as_secs() as i64 };
    let id = SessionStore::new_id();
    if portal.sessions.put(Kind::Session, &id, &session, portal.idle.min(lifetime)).await.is_err() {
        return html(StatusCode::SERVICE_UNAVAILABLE, page::problem("Try again later", "Sessions cannot be kept just now."));
    }
    tracing::info!(subject = %signed_in.subject, "portal: signed in");
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/portal/"))
        .cookie(expired(SIGN_IN_COOKIE))
        .cookie(cookie(SESSION_COOKIE, id, portal.idle))
        .finish()
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

/// End the session here (the form's token must match the session's).
async fn logout(request: HttpRequest, form: web::Form<LogoutForm>, state: web::Data<AppState>) -> HttpResponse {
    let portal = &state.portal;
    if let Some(origin) = request.headers().get(header::ORIGIN)
        && !same_origin(&request, origin)
    {
        return html(StatusCode::FORBIDDEN, page::problem("Not signed out", "The sign-out did not come from this site."));
    }
    let Some(id) = cookie_value(&request, SESSION_COOKIE) else {
        return HttpResponse::SeeOther().insert_header((header::LOCATION, "/portal/")).finish();
    };
    match portal.sessions.get::<Session>(Kind::Session, &id).await {
        Some(session) if session.csrf == form.csrf => {}
        Some(_) => return html(StatusCode::FORBIDDEN, page::problem("Not signed out", "The sign-out form has expired; reload the page.")),
        None => {}
    }
    if portal.sessions.remove(Kind::Session, &id).await.is_err() {
        return html(StatusCode::SERVICE_UNAVAILABLE, page::problem("Try again later", "Sessions cannot be changed just now."));
    }
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .cookie(expired(SESSION_COOKIE))
        .body(page::sign_in(Some("You have signed out.")))
}

fn same_origin(request: &HttpRequest, origin: &HeaderValue) -> bool {
    let info = request.connection_info();
    origin.to_str().is_ok_and(|origin| origin == format!("{}://{}", info.scheme(), info.host()))
}

fn sign_in_failed(error: &oidc::SignInError) -> HttpResponse {
    tracing::warn!(detail = ?error, "portal: sign-in failed");
    let status = match error {
        oidc::SignInError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        oidc::SignInError::Rejected(_) => StatusCode::BAD_GATEWAY,
    };
    html(status, page::problem("Sign-in did not finish", &error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(wish: &str, organisation: &str, kind: &str) -> WishForm {
        WishForm { csrf: String::new(), wish: wish.into(), organisation: organisation.into(), kind: kind.into() }
    }

    #[test]
    fn each_choice_is_a_valid_consent_the_engine_reads_as_meant() {
        let validator = conformance::Validator::embedded().unwrap();
        let consent_type = ResourceType::parse("Consent").unwrap();
        for (choice, expected) in [
            (form("nothing", "", ""), "deny0 * * *"),
            (form("not-with", " rxa ", ""), "deny0 RXA * *"),
            (form("not-from", "RXA", ""), "deny0 * RXA *"),
            (form("only-with", "A81001", ""), "deny0 * * *|except0 A81001 * *"),
            (
                form("keep-back", "", "medicines"),
                "deny0 * * MedicationStatement|deny0 * * MedicationRequest|deny0 * * MedicationDispense|deny0 * * MedicationAdministration",
            ),
        ] {
            let consent = wish_consent("p1", &choice).unwrap();
            let report = validator.validate(consent_type, &consent);
            assert!(report.is_acceptable(), "{}: {report:?}", choice.wish);
            let rows = consent::directives::directive_rows(&consent).unwrap();
            let summary: Vec<String> = rows
                .iter()
                .map(|r| {
                    let any = |value: &Option<String>| value.clone().unwrap_or_else(|| "*".into());
                    format!("{}{} {} {} {}", r.effect.code(), r.rule, any(&r.recipient), any(&r.source), any(&r.class))
                })
                .collect();
            assert_eq!(summary.join("|"), expected, "{}", choice.wish);
            assert!(!page::describe_wish(&consent).is_empty());
        }
        assert!(wish_consent("p1", &form("not-with", "not an ods code!", "")).is_err());
        assert!(wish_consent("p1", &form("keep-back", "", "Patient")).is_err(), "only the listed kinds");
        assert!(page::describe_wish(&wish_consent("p1", &form("keep-back", "", "results")).unwrap()).contains("Test results"));
        assert!(wish_consent("p1", &form("share-everything-with-everyone", "", "")).is_err());
    }
}
