//! The consent scope as SQL: the predicate `consent::decide` evaluates in Rust, written over the
//! stored rows so that a search filters before it pages and counts
//! (docs/information-governance.md). Every function here mirrors a branch of `consent::access`;
//! the property test `sql_scope_agrees_with_decide` holds the two together.
//!
//! Subquery aliases carry the alias of the row they test (`r1_c` for `r1`), so the predicate can
//! appear at every level of a chained search without one level's aliases hiding another's.

use consent::access::{DOCUMENT_TYPES, LABEL_SYSTEMS, RESTRICTED, ReleaseHold, SECONDARY_PURPOSES};
use consent::{Scope, Viewer};
use fhir_models::system::ODS_ORGANIZATION_CODE;

use super::connection::Bind;
use super::query::CompiledQuery;

/// `alias` (a `resources` row) may be seen within `scope`: a Binary with a securityContext when
/// the resource it names may be, and (a document: a Composition) every entry of that, and it
/// carries no withheld label itself; anything else by the rules.
pub(super) fn push_access<'q>(query: &mut CompiledQuery<'q>, me: &str, scope: &'q Scope) {
    let (context, target, entry, entry_target) = (format!("{me}_sc"), format!("{me}_st"), format!("{me}_de"), format!("{me}_et"));
    let has_context = format!("EXISTS (SELECT 1 FROM security_contexts {context} WHERE {context}.res_key = {me}.res_key)");
    query.push(&format!("((({me}.resource_type <> 'Binary' OR NOT {has_context}) AND "));
    push_rules(query, me, scope);
    query.push(&format!(") OR ({me}.resource_type = 'Binary' AND "));
    push_no_withheld_label(query, me, &scope.withheld_labels);
    query.push(&format!(
        " AND EXISTS (SELECT 1 FROM security_contexts {context} JOIN resources {target} \
         ON {target}.resource_type = {context}.target_type AND {target}.id = {context}.target_id \
         WHERE {context}.res_key = {me}.res_key AND {target}.deleted = FALSE AND "
    ));
    push_rules(query, &target, scope);
    // Every entry of the document must be stored, current and visible.
    query.push(&format!(
        " AND NOT EXISTS (SELECT 1 FROM document_entries {entry} WHERE {entry}.res_key = {target}.res_key AND NOT EXISTS \
         (SELECT 1 FROM resources {entry_target} WHERE {entry_target}.resource_type = {entry}.target_type \
         AND {entry_target}.id = {entry}.target_id AND {entry_target}.deleted = FALSE AND "
    ));
    push_rules(query, &entry_target, scope);
    query.push("))");
    query.push(")))");
}

/// `alias` may be seen by the rules of docs/information-governance.md, "Who sees a resource".
fn push_rules<'q>(query: &mut CompiledQuery<'q>, me: &str, scope: &'q Scope) {
    match &scope.viewer {
        Viewer::Patient { own } => {
            query.push("(");
            push_in_compartment(query, me);
            query.push(&format!(" AND NOT EXISTS (SELECT 1 FROM patient_compartment {me}_p WHERE {me}_p.res_key = {me}.res_key"));
            if !own.is_empty() {
                query.push(&format!(" AND {me}_p.patient_id NOT IN ("));
                query.push_list(own.iter().map(|id| Bind::Text(id)));
                query.push(")");
            }
            query.push(") AND ");
            push_no_withheld_label(query, me, &scope.withheld_labels);
            for hold in &scope.release_holds {
                query.push(" AND NOT ");
                push_held_back(query, me, hold);
            }
            query.push(")");
        }
        Viewer::System { org } => {
            query.push(&format!("({me}.source_org = ")).push_bind(Bind::Text(org)).push(" OR (");
            push_shared_type(query, me, scope);
            query.push(" AND NOT ");
            push_in_compartment(query, me);
            query.push(" AND ");
            push_no_withheld_label(query, me, &scope.withheld_labels);
            query.push("))");
        }
        Viewer::Clinician { org, purpose, claimed } => {
            query.push(&format!("({me}.source_org = ")).push_bind(Bind::Text(org)).push(" OR (");
            push_no_withheld_label(query, me, &scope.withheld_labels);
            query.push(" AND ((");
            push_shared_type(query, me, scope);
            query.push(" AND NOT ");
            push_in_compartment(query, me);
            query.push(") OR (");
            push_in_compartment(query, me);
            if !scope.is_emergency() {
                // Every patient of the resource must permit it.
                query.push(&format!(
                    " AND NOT EXISTS (SELECT 1 FROM patient_compartment {me}_p WHERE {me}_p.res_key = {me}.res_key AND NOT ("
                ));
                let patient = format!("{me}_p.patient_id");
                push_patient_permits(query, me, &patient, scope, org, purpose.code(), claimed);
                query.push("))");
            }
            query.push("))))");
        }
        Viewer::Secondary { org, purpose } => {
            // No label exemption for the organisation's own records, and its own records in a
            // patient's compartment are theirs to opt out of too.
            query.push("(");
            push_no_withheld_label(query, me, &scope.withheld_labels);
            query.push(" AND ((NOT ");
            push_in_compartment(query, me);
            query.push(&format!(" AND ({me}.source_org = ")).push_bind(Bind::Text(org)).push(" OR ");
            push_shared_type(query, me, scope);
            query.push(")) OR (");
            push_in_compartment(query, me);
            query.push(&format!(" AND NOT EXISTS (SELECT 1 FROM patient_compartment {me}_p WHERE {me}_p.res_key = {me}.res_key AND "));
            push_dissent(query, me, &format!("{me}_p.patient_id"), scope, org, purpose.code());
            query.push("))))");
        }
    }
}

/// A restricted Patient (`alias`) matches a search through the elements others do not see only
/// for its registered practice.
pub(super) fn push_restricted_guard<'q>(query: &mut CompiledQuery<'q>, me: &str, scope: &'q Scope) {
    let Some(org) = scope.org() else {
        query.push("TRUE");
        return;
    };
    query.push(&format!(
        "NOT (EXISTS (SELECT 1 FROM token_index {me}_r WHERE {me}_r.res_key = {me}.res_key AND {me}_r.param = '_security' AND "
    ));
    push_label_systems(query, &format!("{me}_r.system"));
    query.push(&format!(" AND {me}_r.code = ")).push_name(RESTRICTED);
    query.push(&format!(
        ") AND NOT EXISTS (SELECT 1 FROM care_relationships {me}_g WHERE {me}_g.patient_id = {me}.id AND {me}_g.kind = 'registered' AND "
    ));
    push_names_org(query, &format!("{me}_g"), me, org);
    query.push("))");
}

/// `patient` (a column holding a patient id) permits `me` to a clinician: a relationship in
/// force (or self-claimed) and no dissent that covers the resource.
fn push_patient_permits<'q>(
    query: &mut CompiledQuery<'q>,
    me: &str,
    patient: &str,
    scope: &'q Scope,
    org: &'q str,
    purpose: &'static str,
    claimed: &'q [String],
) {
    // Patients already decided for every resource skip the derivation.
    let permitted: Vec<&str> = scope.known_patients.iter().filter(|(_, ok)| *ok).map(|(id, _)| id.as_str()).collect();
    if !scope.known_patients.is_empty() {
        query.push("(");
        if !permitted.is_empty() {
            query.push(patient).push(" IN (").push_list(permitted.iter().map(|id| Bind::Text(id))).push(") OR ");
        }
        query.push(patient).push(" NOT IN (").push_list(scope.known_patients.iter().map(|(id, _)| Bind::Text(id))).push(") AND ");
    }
    query.push("((");
    if !claimed.is_empty() {
        query.push(patient).push(" IN (").push_list(claimed.iter().map(|id| Bind::Text(id))).push(") OR ");
    }
    query.push(&format!("EXISTS (SELECT 1 FROM care_relationships {me}_rel WHERE {me}_rel.patient_id = {patient} AND "));
    push_names_org(query, &format!("{me}_rel"), me, org);
    query.push(&format!(
        " AND ({me}_rel.kind = 'registered' OR ({me}_rel.kind IN ('encounter', 'care-episode') AND ({me}_rel.ends IS NULL OR {me}_rel.ends >= "
    ));
    query.push_bind(Bind::Int(scope.encounter_cutoff));
    query.push(&format!(")) OR ({me}_rel.kind = 'referral' AND {me}_rel.ends >= ")).push_bind(Bind::Int(scope.referral_cutoff));
    query.push(")))) AND NOT ");
    push_dissent(query, me, patient, scope, org, purpose);
    query.push(")");
    if !scope.known_patients.is_empty() {
        query.push(")");
    }
}

/// dissent(`patient`, `me`, `org`, `purpose`): a sharing wish of the patient's in force now
/// with a deny rule that covers the resource and no exception of that rule that does.
fn push_dissent<'q>(query: &mut CompiledQuery<'q>, me: &str, patient: &str, scope: &'q Scope, org: &'q str, purpose: &'static str) {
    let d = format!("{me}_d");
    query.push(&format!("EXISTS (SELECT 1 FROM consent_directives {d} WHERE {d}.patient_id = {patient} AND {d}.effect = 'deny' AND ({d}.starts IS NULL OR {d}.starts <= "));
    query
        .push_bind(Bind::Int(scope.now))
        .push(&format!(") AND ({d}.ends IS NULL OR {d}.ends >= "))
        .push_bind(Bind::Int(scope.now))
        .push(")");
    query.push(&format!(" AND ({d}.recipient IS NULL OR {d}.recipient = ")).push_bind(Bind::Text(org)).push(")");
    // An unknown source could be the one the patient named.
    query.push(&format!(" AND ({d}.source IS NULL OR {me}.source_org IS NULL OR {d}.source = {me}.source_org)"));
    let documents = DOCUMENT_TYPES.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
    query.push(&format!(
        " AND ({d}.class IS NULL OR {d}.class = {me}.resource_type OR ({me}.resource_type IN ({documents}) AND {d}.class NOT IN ({documents})))"
    ));
    query.push(&format!(" AND ({d}.label IS NULL OR {d}.label IN ("));
    push_labels_of(query, me, "dl");
    query.push(&format!(")) AND ({d}.purpose IS NULL OR {d}.purpose = ")).push_name(purpose).push(")");
    let e = format!("{me}_e");
    query.push(&format!(
        " AND NOT EXISTS (SELECT 1 FROM consent_directives {e} WHERE {e}.res_key = {d}.res_key AND {e}.rule = {d}.rule AND {e}.effect = 'except'"
    ));
    query.push(&format!(" AND ({e}.recipient IS NULL OR {e}.recipient = ")).push_bind(Bind::Text(org)).push(")");
    query.push(&format!(" AND ({e}.source IS NULL OR {e}.source = {me}.source_org)"));
    query.push(&format!(" AND ({e}.class IS NULL OR {e}.class = {me}.resource_type)"));
    query.push(&format!(" AND ({e}.label IS NULL OR {e}.label IN ("));
    push_labels_of(query, me, "el");
    // An exception naming no purpose covers care only (`consent::access::exception_purpose_holds`).
    let unnamed = if SECONDARY_PURPOSES.contains(&purpose) { "FALSE".to_owned() } else { format!("{e}.purpose IS NULL") };
    query.push(&format!(")) AND ({unnamed} OR {e}.purpose = ")).push_name(purpose).push(")))");
}

/// `rows.org_ods` / `rows.org_id` name organisation `org`: by ODS code, or as an Organization
/// whose ODS identifier is `org`.
fn push_names_org<'q>(query: &mut CompiledQuery<'q>, rows: &str, me: &str, org: &'q str) {
    query.push(&format!("({rows}.org_ods = ")).push_bind(Bind::Text(org));
    query.push(&format!(
        " OR {rows}.org_id IN (SELECT {me}_o.id FROM resources {me}_o WHERE {me}_o.resource_type = 'Organization' AND {me}_o.res_key IN \
         (SELECT {me}_x.res_key FROM token_index {me}_x WHERE {me}_x.resource_type = 'Organization' AND {me}_x.param = 'identifier' \
         AND {me}_x.system = '{ODS_ORGANIZATION_CODE}' AND {me}_x.code = "
    ));
    query.push_bind(Bind::Text(org)).push(")))");
}

fn push_in_compartment(query: &mut CompiledQuery<'_>, me: &str) {
    query.push(&format!("EXISTS (SELECT 1 FROM patient_compartment {me}_c WHERE {me}_c.res_key = {me}.res_key)"));
}

fn push_shared_type<'q>(query: &mut CompiledQuery<'q>, me: &str, scope: &'q Scope) {
    if scope.shared_types.is_empty() {
        query.push("FALSE");
        return;
    }
    query.push(&format!("{me}.resource_type IN (")).push_list(scope.shared_types.iter().map(|t| Bind::Text(t))).push(")");
}

fn push_label_systems(query: &mut CompiledQuery<'_>, column: &str) {
    let systems = LABEL_SYSTEMS.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
    query.push(&format!("{column} IN ({systems})"));
}

/// The label codes of `me`.
fn push_labels_of(query: &mut CompiledQuery<'_>, me: &str, suffix: &str) {
    let l = format!("{me}_{suffix}");
    query.push(&format!("SELECT {l}.code FROM token_index {l} WHERE {l}.res_key = {me}.res_key AND {l}.param = '_security' AND "));
    push_label_systems(query, &format!("{l}.system"));
}

fn push_no_withheld_label<'q>(query: &mut CompiledQuery<'q>, me: &str, labels: &'q [String]) {
    if labels.is_empty() {
        query.push("TRUE");
        return;
    }
    let w = format!("{me}_w");
    query.push(&format!("NOT EXISTS (SELECT 1 FROM token_index {w} WHERE {w}.res_key = {me}.res_key AND {w}.param = '_security' AND "));
    push_label_systems(query, &format!("{w}.system"));
    query.push(&format!(" AND {w}.code IN (")).push_list(labels.iter().map(|l| Bind::Text(l))).push("))");
}

/// A result still inside its release delay: of the hold's type and category, without a date
/// or with a date ending after the cutoff.
fn push_held_back<'q>(query: &mut CompiledQuery<'q>, me: &str, hold: &'q ReleaseHold) {
    let t = format!("{me}_t");
    let dt = format!("{me}_dt");
    query.push(&format!("({me}.resource_type = ")).push_bind(Bind::Text(&hold.resource_type));
    query.push(&format!(
        " AND EXISTS (SELECT 1 FROM token_index {t} WHERE {t}.res_key = {me}.res_key AND {t}.param = 'category' AND {t}.system = "
    ));
    query.push_bind(Bind::Text(&hold.category_system)).push(&format!(" AND {t}.code = ")).push_bind(Bind::Text(&hold.category_code));
    query.push(&format!(") AND NOT (EXISTS (SELECT 1 FROM date_index {dt} WHERE {dt}.res_key = {me}.res_key AND {dt}.param = "));
    query.push_bind(Bind::Text(&hold.date_param));
    query.push(&format!(") AND NOT EXISTS (SELECT 1 FROM date_index {dt} WHERE {dt}.res_key = {me}.res_key AND {dt}.param = "));
    query.push_bind(Bind::Text(&hold.date_param)).push(&format!(" AND {dt}.high > ")).push_bind(Bind::Int(hold.cutoff)).push(")))");
}
