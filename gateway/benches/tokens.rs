//! What a bearer token costs per request with a warm key cache, verified every time and reused
//! (verified once, then remembered): `cargo bench -p gateway --bench tokens`. The budget is 20 µs.

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::auth::Authenticator;
use gateway::auth::dev::SigningIssuer;
use gateway::configuration::{IssuerEntry, IssuerKind, Settings};
use serde_json::json;

fn tokens(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let settings = Settings::default();
    let mut entries = Vec::new();
    let mut tokens = Vec::new();
    for kind in IssuerKind::ALL {
        let issuer = SigningIssuer::generate(format!("https://{}.bench", kind.as_str()), kind).unwrap();
        let file = dir.path().join(format!("{}.json", kind.as_str()));
        std::fs::write(&file, serde_json::to_vec(&issuer.jwks()).unwrap()).unwrap();
        entries.push(IssuerEntry {
            issuer: issuer.issuer.clone(),
            audience: "https://gateway.bench/fhir/r4".into(),
            kind,
            jwks_file: Some(file),
            jwks_url: None,
            discovery_url: None,
            ca_file: None,
        });
        let claims = match kind {
            IssuerKind::Clinician => {
                json!({"scope": "user/*.rs", "requesting_organization": "Y90001", "requesting_practitioner_role": "R8000", "purpose_of_use": "TREAT"})
            }
            IssuerKind::System => json!({"scope": "system/*.cruds", "requesting_organization": "R9Z"}),
            IssuerKind::Patient => json!({"scope": "openid patient/*.rs", "nhs_number": "9449305552", "identity_proofing_level": "P9"}),
        };
        tokens.push((kind, format!("Bearer {}", issuer.mint("https://gateway.bench/fhir/r4", "bench", 3600, &claims))));
    }
    // An RS256 issuer too (the common choice of identity providers, NHS login's included),
    // with a key from openssl: nothing in the gateway's tree generates RSA keys.
    let rsa_pem = std::process::Command::new("openssl").args(["genrsa", "2048"]).output().expect("openssl makes an RSA key").stdout;
    let rsa_key = jsonwebtoken::EncodingKey::from_rsa_pem(&rsa_pem).unwrap();
    let mut rsa_jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa_key, jsonwebtoken::Algorithm::RS256).unwrap();
    rsa_jwk.common.key_id = Some("rsa-1".into());
    let rsa_file = dir.path().join("rsa.json");
    std::fs::write(&rsa_file, serde_json::to_vec(&jsonwebtoken::jwk::JwkSet { keys: vec![rsa_jwk] }).unwrap()).unwrap();
    entries.push(IssuerEntry {
        issuer: "https://rsa.bench".into(),
        audience: "https://gateway.bench/fhir/r4".into(),
        kind: IssuerKind::System,
        jwks_file: Some(rsa_file),
        jwks_url: None,
        discovery_url: None,
        ca_file: None,
    });
    let mut rsa_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    rsa_header.kid = Some("rsa-1".into());
    let rsa_claims = json!({"iss": "https://rsa.bench", "aud": "https://gateway.bench/fhir/r4", "sub": "bench", "exp": 4_000_000_000u64,
        "scope": "system/*.cruds", "requesting_organization": "R9Z"});
    let rsa_token = format!("Bearer {}", jsonwebtoken::encode(&rsa_header, &rsa_claims, &rsa_key).unwrap());

    // The floor: the signature check alone, with ring, on the same two tokens (RS256 and the
    // clinician's ES256). No verifier can cost less than this for a token it has not seen.
    let signature_alone = |token: &str, jwk: &jsonwebtoken::jwk::Jwk| -> Box<dyn Fn() -> bool> {
        use base64::Engine;
        use jsonwebtoken::jwk::AlgorithmParameters;
        let decode = |part: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap();
        let token = token.trim_start_matches("Bearer ");
        let (message, signature) = token.rsplit_once('.').unwrap();
        let (message, signature) = (message.as_bytes().to_vec(), decode(signature));
        match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let key = ring::signature::RsaPublicKeyComponents { n: decode(&rsa.n), e: decode(&rsa.e) };
                Box::new(move || key.verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &message, &signature).is_ok())
            }
            AlgorithmParameters::EllipticCurve(ec) => {
                let mut point = vec![4u8];
                point.extend(decode(&ec.x));
                point.extend(decode(&ec.y));
                Box::new(move || {
                    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
                        .verify(&message, &signature)
                        .is_ok()
                })
            }
            other => panic!("no bench for {other:?}"),
        }
    };
    let rsa_public = jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa_key, jsonwebtoken::Algorithm::RS256).unwrap();
    let es_public: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&std::fs::read(dir.path().join("clinician.json")).unwrap()).unwrap();
    for (name, check) in [("RS256", signature_alone(&rsa_token, &rsa_public)), ("ES256", signature_alone(&tokens[0].1, &es_public.keys[0]))]
    {
        assert!(check(), "{name} signature verifies");
        c.bench_function(&format!("signature alone ({name}, ring)"), |b| b.iter(|| std::hint::black_box(check())));
    }

    // Every request's signature checked, and a token reused across requests (the usual case).
    let mut uncached = settings.auth.clone();
    uncached.verified_token_cache_secs = 0;
    for (label, auth) in [("verify", uncached), ("reused", settings.auth.clone())] {
        let authenticator = Authenticator::new(&auth, &entries).unwrap();
        runtime.block_on(authenticator.load_keys());
        let labelled = tokens.iter().map(|(kind, header)| (format!("{} token (ES256", kind.as_str()), header));
        for (name, header) in labelled.chain(std::iter::once(("system token (RS256".to_owned(), &rsa_token))) {
            assert!(runtime.block_on(authenticator.authenticate(Some(header.as_bytes()), None)).unwrap().is_some());
            c.bench_function(&format!("{label} {name}, warm keys)"), |b| {
                b.iter(|| runtime.block_on(authenticator.authenticate(Some(std::hint::black_box(header.as_bytes())), None)).unwrap())
            });
        }
    }
}

criterion_group!(benches, tokens);
criterion_main!(benches);
