//! Token signatures checked with ring, the gateway's TLS crypto, instead of jsonwebtoken's
//! pure-Rust verifiers: an ES256 check there costs about 300 µs on this project's machine, which
//! GP Connect-style clients (a new token per request) would pay on every request. ring's
//! assembly verifiers are several times faster. Signing (development issuers and tests) and key
//! utilities stay jsonwebtoken's own; algorithms not listed here fall back to its verifiers.

use std::sync::OnceLock;

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, rust_crypto};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, signature};
use ring::signature as ring_signature;

/// Make ring the verifier for every token this process checks. Idempotent; call it before any
/// other use of jsonwebtoken (its first use fixes the process's provider).
pub fn install() {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| CryptoProvider {
        signer_factory: rust_crypto::DEFAULT_PROVIDER.signer_factory,
        verifier_factory,
        key_utils: rust_crypto::DEFAULT_PROVIDER.key_utils.clone(),
    });
    // Fails only when already installed, by this function or by an earlier use of the crate's
    // default; either way verification is correct, only its speed differs.
    let _ = provider.install_default();
}

enum PublicKey {
    /// An uncompressed EC point (`04 || x || y`) or a raw Ed25519 key, as `DecodingKey::from_jwk`
    /// holds them.
    Raw(&'static dyn ring_signature::VerificationAlgorithm, Vec<u8>),
    Rsa(&'static ring_signature::RsaParameters, Vec<u8>, Vec<u8>),
}

struct RingVerifier {
    algorithm: Algorithm,
    key: PublicKey,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let verified = match &self.key {
            PublicKey::Raw(algorithm, key) => ring_signature::UnparsedPublicKey::new(*algorithm, key).verify(message, signature),
            PublicKey::Rsa(parameters, n, e) => ring_signature::RsaPublicKeyComponents { n, e }.verify(parameters, message, signature),
        };
        verified.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn verifier_factory(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    use Algorithm::*;
    use ring_signature::*;
    let raw = |verification: &'static dyn VerificationAlgorithm| match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => Ok(PublicKey::Raw(verification, bytes.clone())),
        DecodingKeyKind::RsaModulusExponent { .. } => Err(ErrorKind::InvalidKeyFormat),
    };
    // RSA keys under 2048 bits are refused (ring's `_2048_8192` parameters).
    let rsa = |parameters: &'static RsaParameters| match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            Ok(PublicKey::Rsa(parameters, n.iter().copied().skip_while(|byte| *byte == 0).collect(), e.clone()))
        }
        DecodingKeyKind::SecretOrDer(_) => Err(ErrorKind::InvalidKeyFormat),
    };
    let public_key = match (algorithm, key.family()) {
        (ES256, AlgorithmFamily::Ec) => raw(&ECDSA_P256_SHA256_FIXED),
        (ES384, AlgorithmFamily::Ec) => raw(&ECDSA_P384_SHA384_FIXED),
        (EdDSA, AlgorithmFamily::Ed) => raw(&ED25519),
        (RS256, AlgorithmFamily::Rsa) => rsa(&RSA_PKCS1_2048_8192_SHA256),
        (RS384, AlgorithmFamily::Rsa) => rsa(&RSA_PKCS1_2048_8192_SHA384),
        (RS512, AlgorithmFamily::Rsa) => rsa(&RSA_PKCS1_2048_8192_SHA512),
        (PS256, AlgorithmFamily::Rsa) => rsa(&RSA_PSS_2048_8192_SHA256),
        (PS384, AlgorithmFamily::Rsa) => rsa(&RSA_PSS_2048_8192_SHA384),
        (PS512, AlgorithmFamily::Rsa) => rsa(&RSA_PSS_2048_8192_SHA512),
        // Anything else (HMAC, or a key of the wrong family) gets jsonwebtoken's own answer,
        // which for these is an error.
        _ => return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(algorithm, key),
    }?;
    Ok(Box::new(RingVerifier { algorithm: *algorithm, key: public_key }))
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header, Validation};
    use serde_json::json;

    use super::*;

    /// Sign with jsonwebtoken's own signer, verify with ring, for each curve rcgen can make;
    /// a flipped signature bit and a key of the wrong curve fail.
    #[test]
    fn ring_verifies_what_jsonwebtoken_signs_and_nothing_else() {
        install();
        let claims = json!({"sub": "s", "exp": 4_000_000_000u64});
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        for (rcgen_algorithm, algorithm) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, Algorithm::ES384),
            (&rcgen::PKCS_ED25519, Algorithm::EdDSA),
        ] {
            let key_pair = rcgen::KeyPair::generate_for(rcgen_algorithm).unwrap();
            let pem = key_pair.serialize_pem();
            let (encoding, decoding) = match algorithm {
                Algorithm::EdDSA => (
                    EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
                    DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(key_pair.public_key_raw())).unwrap(),
                ),
                _ => {
                    let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
                    let decoding = DecodingKey::from_jwk(&Jwk::from_encoding_key(&encoding, algorithm).unwrap()).unwrap();
                    (encoding, decoding)
                }
            };
            let token = jsonwebtoken::encode(&Header::new(algorithm), &claims, &encoding).unwrap();
            validation.algorithms = vec![algorithm];
            assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).is_ok(), "{algorithm:?}");
            let (message, signature) = token.rsplit_once('.').unwrap();
            let flipped = if signature.starts_with('A') { signature.replacen('A', "B", 1) } else { format!("A{}", &signature[1..]) };
            let forged = format!("{message}.{flipped}");
            assert!(jsonwebtoken::decode::<serde_json::Value>(&forged, &decoding, &validation).is_err(), "{algorithm:?} forged");
        }
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_pem();
        let p256 = EncodingKey::from_ec_pem(p256.as_bytes()).unwrap();
        let p256_public = DecodingKey::from_jwk(&Jwk::from_encoding_key(&p256, Algorithm::ES256).unwrap()).unwrap();
        // A valid ES256 signature does not verify as ES384 over the same key.
        let message = b"header.claims";
        let signature = URL_SAFE_NO_PAD.decode(jsonwebtoken::crypto::sign(message, &p256, Algorithm::ES256).unwrap()).unwrap();
        let es256 = verifier_factory(&Algorithm::ES256, &p256_public).unwrap();
        assert!(signature::Verifier::verify(&*es256, message, &signature).is_ok());
        let es384 = verifier_factory(&Algorithm::ES384, &p256_public).unwrap();
        assert!(signature::Verifier::verify(&*es384, message, &signature).is_err());
        // HMAC never verifies with a public key.
        assert!(verifier_factory(&Algorithm::HS256, &p256_public).is_err());
    }
}
